"""kill -9 the real worker process (`strategy-worker run`) at 20 points of a multi-strategy run,
restarting it each time; then replay the input topics from offset 0 with a new group.

Witness: the paper OMS (in this test process) keeps every order it ever accepted. After the
run: no client order id twice, no initial order twice, every OMS order recorded before it was
sent, fills in PostgreSQL equal the fills at the OMS, every execution resumed and owned, and
the `strategy.execution` topic (read from offset 0, repeats dropped by event id) holds every
event PostgreSQL committed: a started event per execution, an order_submitted per order, an
order_filled per fill; zero lost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from strategy_worker.oms_sim.server import OmsSimServer

from .harness import (
    assert_never_twice_never_lost,
    control_message,
    encode,
    eventually,
    fetch_all,
    ledger,
    read_events,
    record_figures,
    spawn_worker,
    strategy_message,
    unique,
    worker_config_file,
)

pytestmark = pytest.mark.timeout(300)

TopicFactory = Callable[..., Awaitable[str]]
KILLS = 20


RESUBMIT = "orders the OMS never saw: checked again"
"""Logged by reconciliation as it re-checks recorded orders the OMS does not know, before
the step that resends them commits (runtime/reconcile.py)."""

# Where each kill lands: (log event to wait for, how many of them, extra delay in seconds).
# "spawn" counts from the process start (imports, migrations, connections).
KILL_POINTS: tuple[tuple[str, int, float], ...] = (
    ("execution started", 1, 0.0),  # mid-intake: first execution durable, orders not yet sent
    ("execution started", 2, 0.02),
    ("worker running", 1, 0.3),
    ("execution resumed", 1, 0.0),  # mid-resume
    ("execution started", 1, 0.05),
    (RESUBMIT, 1, 0.0),  # mid-resubmission
    ("worker running", 1, 1.0),  # reports, reconciliation, lease cycles
    ("execution resumed", 3, 0.0),
    ("execution started", 3, 0.0),
    ("spawn", 1, 1.5),  # during startup
    ("execution started", 1, 0.01),
    ("execution resumed", 5, 0.0),
    ("worker running", 1, 0.1),
    ("execution started", 2, 0.0),
    (RESUBMIT, 1, 0.01),
    ("execution resumed", 2, 0.03),
    ("worker running", 1, 2.0),
    ("spawn", 1, 3.0),
    ("execution resumed", 8, 0.0),
    ("worker running", 1, 0.5),
)
MARKER_TIMEOUT_S = 12.0


async def wait_for_kill_point(log: Path, offset: int, event: str, count: int) -> bool:
    """Wait until the worker logged `event` `count` times since `offset`; False on timeout."""
    if event == "spawn":
        return True
    needle = f'"event": "{event}"'
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while time.monotonic() < deadline:
        with log.open("rb") as handle:
            handle.seek(offset)
            seen = handle.read().decode(errors="replace").count(needle)
        if seen >= count:
            return True
        await asyncio.sleep(0.01)
    return False


async def topics(make_topic: TopicFactory) -> dict[str, str]:
    return {
        "approved": await make_topic("approved"),
        "control": await make_topic("control"),
        "execution": await make_topic("execution"),
        "dead_letter": await make_topic("dlq"),
    }


def worker_env(dsn: str, redis_url: str, kafka_bootstrap: str) -> dict[str, str]:
    return {
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
    }


async def converged(dsn: str, server: OmsSimServer, expected: int, owner: str) -> bool:
    """Every strategy has its execution, owned by `owner`; no order is open (protective legs
    resting at the OMS for a position's life do not count); the OMS and PostgreSQL agree on
    orders and fills."""
    rows = await fetch_all(
        dsn,
        "SELECT count(*) FILTER (WHERE owner_id = $1 AND lease_expires_at > now()) AS owned, "
        "count(*) AS n FROM strategy_executions",
        owner,
    )
    if rows[0]["n"] != expected or rows[0]["owned"] != expected:
        return False
    open_orders = await fetch_all(
        dsn,
        "SELECT count(*) AS n FROM execution_orders "
        "WHERE status NOT IN ('FILLED', 'CANCELLED', 'REJECTED') AND NOT (reduce_only "
        "AND purpose IN ('STOP_LOSS', 'TAKE_PROFIT', 'TRAILING_STOP') "
        "AND order_type <> 'MARKET')",
    )
    if open_orders[0]["n"]:
        return False
    book = await ledger(dsn, server)
    return set(book.db_orders) == set(book.oms_orders) and book.db_fills == book.oms_fills


async def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for payload in payloads:
            await producer.send(topic, payload, key=uuid.uuid4().bytes)
        await producer.flush()
    finally:
        await producer.stop()


async def test_kill_9_at_20_points_then_restart_sends_nothing_twice_and_loses_no_fill(
    migrated_dsn: str,
    redis_url: str,
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    price_prefix: str,
    tmp_path: Path,
) -> None:
    # Arrange: an OMS with a little latency widens the windows a kill can land in.
    server = OmsSimServer(_sim_config(latency_ms=15.0))
    await server.start()
    run = unique("kill9")
    names = await topics(make_topic)
    config = worker_config_file(
        tmp_path / "worker.yaml",
        topics=names,
        group=f"{run}-group",
        oms_port=server.port,
        price_prefix=price_prefix,
        # Room for every strategy of the run: the fleet cap is not what this test is about.
        risk={"max_total_exposure": "100000000"},
    )
    env = worker_env(migrated_dsn, redis_url, kafka_bootstrap)
    log = tmp_path / "worker.log"
    worker_id = f"{run}-w"
    rounds: list[dict[str, Any]] = []
    produced = 0
    started = time.monotonic()
    try:
        # Act: 20 kills at the KILL_POINTS, new strategies arriving every round.
        for round_no in range(KILLS):
            event, count, delay = KILL_POINTS[round_no]
            # New strategies every round: enough for an intake kill point to be reached.
            fresh = count if event == "execution started" else 1
            batch = [encode(strategy_message(produced + k, run=run)) for k in range(fresh)]
            await produce(kafka_bootstrap, names["approved"], batch)
            produced += len(batch)
            offset = log.stat().st_size if log.exists() else 0
            spawned = time.monotonic()
            proc = spawn_worker(config, worker_id=worker_id, env=env, log=log)
            reached = await wait_for_kill_point(log, offset, event, count)
            await asyncio.sleep(delay)
            assert proc.alive, f"the worker exited by itself in round {round_no}: see {log}"
            proc.kill()
            book = await ledger(migrated_dsn, server)
            rounds.append(
                {
                    "round": round_no,
                    "kill_point": f"{event} x{count} +{delay}s",
                    "reached": reached,
                    "killed_after_s": round(time.monotonic() - spawned, 2),
                    "executions": len({o[0] for o in book.db_orders.values()}),
                    "orders_recorded": len(book.db_orders),
                    "orders_at_oms": len(book.oms_orders),
                    "fills_at_oms": len(book.oms_fills),
                    "fills_recorded": len(book.db_fills),
                }
            )
        kills_done = time.monotonic()
        final = spawn_worker(config, worker_id=worker_id, env=env, log=log)
        try:
            recovered_in = await eventually(
                lambda: converged(migrated_dsn, server, produced, worker_id),
                60,
                "the restarted worker converges",
            )
            book = await ledger(migrated_dsn, server)
            await eventually(lambda: _outbox_published(migrated_dsn), 30, "the outbox drains")
        finally:
            final.kill()
        events = await read_events(kafka_bootstrap, names["execution"])
    finally:
        await server.stop()
        await server.prices.close()

    # Assert
    counts = assert_never_twice_never_lost(book)
    reached = sum(1 for r in rounds if r["reached"])
    assert reached >= 15, rounds
    assert set(book.db_orders) == set(book.oms_orders)
    executions = await fetch_all(
        migrated_dsn, "SELECT execution_id, status, owner_id, lease_epoch FROM strategy_executions"
    )
    assert len(executions) == produced
    assert {e["status"] for e in executions} == {"active"}
    assert {e["owner_id"] for e in executions} == {worker_id}
    from .test_takeover import scan_for_secrets

    secrets = scan_for_secrets([log], migrated_dsn)
    assert secrets == {}, secrets
    positions = await _positions_match(migrated_dsn, server)
    assert positions["mismatched"] == 0
    event_counts = await _events_match_the_store(migrated_dsn, events)
    record_figures(
        "kill_9",
        {
            "kills": KILLS,
            "kill_points_reached": reached,
            "strategies": produced,
            "executions": len(executions),
            "max_lease_epoch": max(e["lease_epoch"] for e in executions),
            "kill_phase_seconds": round(kills_done - started, 1),
            "recovered_after_last_restart_s": round(recovered_in, 2),
            "duplicate_client_ids_at_oms": len(book.oms_log) - len(set(book.oms_log)),
            **counts,
            "positions_checked": positions["checked"],
            **event_counts,
            "log_lines_scanned_for_secrets": len(log.read_text().splitlines()),
            "rounds": rounds,
        },
    )


async def test_replaying_approved_and_control_from_offset_0_creates_and_sends_nothing(
    migrated_dsn: str,
    redis_url: str,
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    price_prefix: str,
    oms_server: OmsSimServer,
    tmp_path: Path,
) -> None:
    # Arrange: a run with strategies and control requests, converged.
    run = unique("replay")
    names = await topics(make_topic)
    env = worker_env(migrated_dsn, redis_url, kafka_bootstrap)
    log = tmp_path / "worker.log"
    worker_id = f"{run}-w"
    messages = [strategy_message(i, run=run) for i in range(4)]
    await produce(kafka_bootstrap, names["approved"], [encode(m) for m in messages])
    first = worker_config_file(
        tmp_path / "first.yaml",
        topics=names,
        group=f"{run}-g1",
        oms_port=oms_server.port,
        price_prefix=price_prefix,
    )
    proc = spawn_worker(first, worker_id=worker_id, env=env, log=log)
    try:
        await eventually(
            lambda: converged(migrated_dsn, oms_server, 4, worker_id), 60, "first run converges"
        )
        execution_ids = [
            r["execution_id"]
            for r in await fetch_all(migrated_dsn, "SELECT execution_id FROM strategy_executions")
        ]
        controls = [
            control_message(execution_id=execution_ids[0], action="pause"),
            control_message(execution_id=execution_ids[0], action="resume"),
            control_message(execution_id=execution_ids[1], action="pause"),
        ]
        await produce(kafka_bootstrap, names["control"], controls)
        await eventually(lambda: _controls_done(migrated_dsn, 3), 30, "control requests applied")
    finally:
        proc.kill()
    before = await ledger(migrated_dsn, oms_server)
    before_state = await _execution_states(migrated_dsn)
    second = worker_config_file(
        tmp_path / "second.yaml",
        topics=names,
        group=f"{run}-g2",  # a new group: everything from offset 0 again
        oms_port=oms_server.port,
        price_prefix=price_prefix,
    )

    # Act
    replay = spawn_worker(second, worker_id=worker_id, env=env, log=log)
    try:
        await eventually(
            lambda: _group_caught_up(kafka_bootstrap, f"{run}-g2", names, 4, 3),
            60,
            "the replaying group consumed both topics",
        )
        await asyncio.sleep(1.0)  # a lease and reconcile cycle after the replay
        after = await ledger(migrated_dsn, oms_server)
        after_state = await _execution_states(migrated_dsn)
    finally:
        replay.kill()

    # Assert
    assert len(after_state) == len(before_state) == 4
    assert after_state == before_state
    assert set(after.oms_orders) == set(before.oms_orders)
    assert after.oms_log == before.oms_log
    outcomes = await fetch_all(migrated_dsn, "SELECT outcome FROM control_requests")
    assert sorted(r["outcome"] for r in outcomes) == ["APPLIED"] * 3
    record_figures(
        "replay_from_offset_0",
        {
            "strategies_replayed": 4,
            "controls_replayed": 3,
            "new_executions": len(after_state) - len(before_state),
            "new_orders": len(after.oms_orders) - len(before.oms_orders),
            "control_requests_recorded": len(outcomes),
        },
    )


async def _outbox_published(dsn: str) -> bool:
    rows = await fetch_all(
        dsn, "SELECT count(*) AS n FROM event_outbox WHERE published_seq IS NULL"
    )
    return rows[0]["n"] == 0


async def _events_match_the_store(dsn: str, events: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Every committed event is on the topic, and the events tell what PostgreSQL holds."""
    committed = await fetch_all(dsn, "SELECT event_id::text AS id FROM event_outbox")
    missing = {r["id"] for r in committed} - set(events)
    assert not missing, f"{len(missing)} committed events never reached Kafka"
    assert len(events) == len(committed), "events on the topic that were never committed"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events.values():
        by_type.setdefault(event["type"].removeprefix("strategy.execution."), []).append(event)
    executions = await fetch_all(dsn, "SELECT execution_id::text AS id FROM strategy_executions")
    started = [e["execution_id"] for e in by_type.get("started", [])]
    assert sorted(started) == sorted(r["id"] for r in executions)
    # order_submitted is the OMS's acknowledgement (an order it rejected at once has none).
    orders = await fetch_all(
        dsn,
        "SELECT client_order_id FROM execution_orders "
        "WHERE oms_order_id IS NOT NULL AND status <> 'REJECTED'",
    )
    submitted = {e["client_order_id"] for e in by_type.get("order_submitted", [])}
    assert submitted == {r["client_order_id"] for r in orders}
    fills = await fetch_all(dsn, "SELECT fill_id FROM execution_fills")
    filled = [e["fill_id"] for e in by_type.get("order_filled", [])]
    assert sorted(filled) == sorted(r["fill_id"] for r in fills)
    return {
        "events_committed": len(committed),
        "events_on_kafka": len(events),
        "events_lost": len(missing),
        "order_filled_events": len(filled),
    }


async def _execution_states(dsn: str) -> dict[str, str]:
    rows = await fetch_all(dsn, "SELECT execution_id, status FROM strategy_executions")
    return {str(r["execution_id"]): r["status"] for r in rows}


async def _controls_done(dsn: str, count: int) -> bool:
    rows = await fetch_all(
        dsn, "SELECT count(*) AS n FROM control_requests WHERE outcome <> 'RECEIVED'"
    )
    return bool(rows[0]["n"] >= count)


async def _group_caught_up(
    bootstrap: str, group: str, names: dict[str, str], approved: int, control: int
) -> bool:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    done_approved = offsets.get(TopicPartition(names["approved"], 0))
    done_control = offsets.get(TopicPartition(names["control"], 0))
    return (
        done_approved is not None
        and done_approved.offset >= approved
        and done_control is not None
        and done_control.offset >= control
    )


async def _positions_match(dsn: str, server: OmsSimServer) -> dict[str, int]:
    """Each execution's positions in PostgreSQL equal the OMS's book for it."""
    from decimal import Decimal

    rows = await fetch_all(dsn, "SELECT execution_id, positions FROM strategy_executions")
    mismatched = checked = 0
    for row in rows:
        stored = json.loads(row["positions"] or "{}").get("positions", {})
        local = {s: Decimal(str(p["quantity"])) for s, p in stored.items()}
        remote = {
            s: q
            for s, q in server.venue.execution_book(row["execution_id"]).net_positions().items()
        }
        local = {s: q for s, q in local.items() if q}
        remote = {s: q for s, q in remote.items() if q}
        checked += 1
        mismatched += local != remote
    return {"checked": checked, "mismatched": mismatched}


def _sim_config(*, latency_ms: float) -> Any:
    from decimal import Decimal

    from strategy_worker.oms_sim.config import OmsSimConfig, PricesConfig

    from .harness import PRICES

    return OmsSimConfig(
        host="127.0.0.1",
        port=0,
        latency_ms=latency_ms,
        tick_interval_s=0.05,
        prices=PricesConfig(start_prices=PRICES, volatility=Decimal("0.0002"), seed=3),
    )
