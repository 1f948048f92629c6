"""A poll's worth of approved strategies handled as one batch: good ones created once with
their orders, the bad ones dead-lettered with their reason, a symbol without a price
skipped (not the strategy), and a replayed batch does nothing but count its replays."""

from __future__ import annotations

import pytest

from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.runtime.intake import IncomingStrategy

from .harness import (
    Rig,
    assert_never_twice_never_lost,
    encode,
    eventually,
    execution_of,
    fetch_all,
    ledger,
    open_rig,
    strategy_message,
    unique,
)

pytestmark = pytest.mark.timeout(120)


async def test_batch_with_duplicates_and_bad_messages_creates_each_good_strategy_once(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange: three good strategies, one of them twice, a malformed one, and one whose only
    # symbol has no price (issue 12 item 5: that symbol is skipped, the strategy is not).
    run = unique("batch")
    good = [strategy_message(i, run=run) for i in range(3)]
    unpriced = strategy_message(3, run=run)
    unpriced["config"]["symbols"] = ["NOPE"]
    unpriced["config"]["allocation"] = {"NOPE": "0.10"}
    payloads = [
        encode(good[0]),
        encode(good[1]),
        encode(good[0]),
        b'{"type": "strategy.approved", "strategy_id": ',
        encode(unpriced),
        encode(good[2]),
    ]
    batch = [IncomingStrategy(p, f"test@{i}") for i, p in enumerate(payloads)]
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=f"{run}-w",
    )
    try:
        # Act
        await rig.worker.handle_strategies(batch)

        async def all_filled() -> bool:
            rows = await fetch_all(
                migrated_dsn,
                "SELECT count(*) FILTER (WHERE status = 'FILLED') AS filled, count(*) AS n "
                "FROM execution_orders",
            )
            return bool(rows[0]["n"] > 0 and rows[0]["filled"] == rows[0]["n"])

        await eventually(all_filled, 30, "every initial order filled")
        before = await ledger(migrated_dsn, oms_server)
        await rig.worker.handle_strategies(batch)  # the same poll redelivered
        after = await ledger(migrated_dsn, oms_server)
        await eventually(lambda: _started_events(rig, 4), 10, "the started events published")
    finally:
        await rig.close()

    # Assert
    strategies = [*good, unpriced]
    executions = await fetch_all(migrated_dsn, "SELECT strategy_id FROM strategy_executions")
    assert sorted(str(r["strategy_id"]) for r in executions) == sorted(
        m["strategy_id"] for m in strategies
    )
    codes = sorted(d["code"] for d in rig.sink.dead_letters)
    # The malformed one, once per delivery of the batch; replays are not dead-lettered.
    assert codes == ["invalid_json", "invalid_json"]
    replays = rig.registry.get_sample_value("strategy_messages_duplicate_total", {"kind": "replay"})
    assert replays == 1 + 5  # the repeat inside the batch, then every good one redelivered
    started = [e for e in rig.sink.unique_events() if e["type"] == "strategy.execution.started"]
    assert len(started) == 4
    unpriced_id = execution_of(unpriced)
    skipped = await fetch_all(
        migrated_dsn,
        "SELECT event_type, severity FROM risk_events WHERE execution_id = $1",
        unpriced_id,
    )
    assert [(r["event_type"], r["severity"]) for r in skipped] == [("PRICE_MISSING", "WARNING")]
    assert not any(v[0] == str(unpriced_id) for v in after.db_orders.values())
    assert after.oms_log == before.oms_log
    counts = assert_never_twice_never_lost(after)
    assert counts["orders_at_oms"] == 3 + 3 + 2  # the three good baskets, nothing twice


async def test_redelivered_message_of_a_stored_execution_is_a_counted_replay_not_a_conflict(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange: an execution stored in PostgreSQL (whose JSONB keeps the config's keys in an
    # order of its own), then the same message again (a consumer redelivery) and the same
    # strategy id and timestamp with other content.
    run = unique("replay")
    message = strategy_message(1, run=run)
    changed = strategy_message(1, run=run, capital="50000.00")
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=f"{run}-w",
    )
    try:
        await rig.worker.handle_strategy(encode(message), "approved/0@1")

        # Act
        await rig.worker.handle_strategy(encode(message), "approved/0@1")
        after_replay = [d["code"] for d in rig.sink.dead_letters]
        await rig.worker.handle_strategy(encode(changed), "approved/0@2")
    finally:
        await rig.close()

    # Assert
    assert after_replay == []
    assert [d["code"] for d in rig.sink.dead_letters] == ["duplicate_conflict"]
    kinds = {
        kind: rig.registry.get_sample_value("strategy_messages_duplicate_total", {"kind": kind})
        for kind in ("replay", "conflict")
    }
    assert kinds == {"replay": 1.0, "conflict": 1.0}
    executions = await fetch_all(migrated_dsn, "SELECT count(*) AS n FROM strategy_executions")
    assert executions[0]["n"] == 1


async def _started_events(rig: Rig, count: int) -> bool:
    started = [e for e in rig.sink.unique_events() if e["type"] == "strategy.execution.started"]
    return len(started) >= count
