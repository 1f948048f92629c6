"""Two worker processes in one consumer group; one is killed -9. The survivor resumes the dead
worker's executions within the lease bound and drives them alone: after the takeover the
dead worker's fence no longer writes, and the OMS order log of each execution is one
gap-free sequence of intents (never two workers' orders interleaved). A scan of every log
line both processes wrote finds no secret."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.store import (
    ExecutionStatus,
    ExecutionWrite,
    Fence,
    RiskEventRecord,
    Severity,
)

from .harness import (
    assert_never_twice_never_lost,
    control_message,
    encode,
    eventually,
    fetch_all,
    ledger,
    record_figures,
    spawn_worker,
    strategy_message,
    unique,
    worker_config_file,
)
from .test_crash_recovery import produce, topics, worker_env

pytestmark = pytest.mark.timeout(180)

TopicFactory = Callable[..., Awaitable[str]]
LEASE_S = 2.0
HEARTBEAT_S = 0.5
STRATEGIES = 6
BOUND_S = LEASE_S + 2 * HEARTBEAT_S + 2.0
"""Lease expiry, the survivor's next heartbeat, and time to resume (process scheduling)."""


async def test_killed_worker_is_taken_over_within_the_lease_and_never_driven_twice(
    migrated_dsn: str,
    redis_url: str,
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    price_prefix: str,
    oms_server: OmsSimServer,
    tmp_path: Path,
) -> None:
    # Arrange: two workers share the group; the approved topic has two partitions.
    run = unique("takeover")
    names = await topics(make_topic)
    names["approved"] = await make_topic("approved", partitions=2)
    config = worker_config_file(
        tmp_path / "worker.yaml",
        topics=names,
        group=f"{run}-group",
        oms_port=oms_server.port,
        price_prefix=price_prefix,
        lease_seconds=LEASE_S,
        heartbeat=HEARTBEAT_S,
    )
    env = worker_env(migrated_dsn, redis_url, kafka_bootstrap)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = spawn_worker(config, worker_id=f"{run}-A", env=env, log=logs[0])
    b = spawn_worker(config, worker_id=f"{run}-B", env=env, log=logs[1])
    try:
        await produce(
            kafka_bootstrap,
            names["approved"],
            [encode(strategy_message(i, run=run)) for i in range(STRATEGIES)],
        )
        await eventually(lambda: _settled(migrated_dsn, STRATEGIES), 90, "both workers trade")
        owners = await _owners(migrated_dsn)
        victim = f"{run}-A" if f"{run}-A" in owners.values() else f"{run}-B"
        survivor = f"{run}-B" if victim.endswith("-A") else f"{run}-A"
        orphans = [e for e, o in owners.items() if o == victim]
        assert orphans, owners
        old_epochs = await _epochs(migrated_dsn)

        # Act: kill -9 the victim; the survivor must take over within the lease bound.
        (a if victim.endswith("-A") else b).kill()
        taken_in = await eventually(
            lambda: _all_owned_by(migrated_dsn, orphans, survivor),
            BOUND_S,
            "the survivor owns the orphans",
        )
        # After the takeover the survivor trades them: stop one (closing sells).
        target = orphans[0]
        await produce(
            kafka_bootstrap, names["control"], [control_message(execution_id=target, action="stop")]
        )
        await eventually(
            lambda: _status(migrated_dsn, target, "stopped"), 30, "the survivor stops it"
        )
        book = await ledger(migrated_dsn, oms_server)
        fenced = await _old_fence_is_refused(migrated_dsn, target, victim, old_epochs[target])
    finally:
        a.kill()
        b.kill()

    # Assert
    counts = assert_never_twice_never_lost(book)
    assert taken_in <= BOUND_S
    assert fenced
    orders = await fetch_all(
        migrated_dsn,
        "SELECT execution_id, intent_seq, client_order_id, purpose FROM execution_orders "
        "ORDER BY execution_id, intent_seq",
    )
    per_execution: dict[str, list[int]] = {}
    for row in orders:
        per_execution.setdefault(str(row["execution_id"]), []).append(row["intent_seq"])
    for execution, seqs in per_execution.items():
        assert seqs == list(range(1, len(seqs) + 1)), (execution, seqs)
    sent = [c for c in book.oms_log if book.oms_orders[c][0] == str(target)]
    assert [int(c.rsplit("-", 1)[1]) for c in sent] == sorted(
        int(c.rsplit("-", 1)[1]) for c in sent
    ), "orders of one execution reached the OMS out of intent order"
    closes = [
        r for r in orders if str(r["execution_id"]) == str(target) and r["purpose"] == "CLOSE"
    ]
    assert closes, "the survivor sent the closing orders"
    secrets = scan_for_secrets(logs, migrated_dsn)
    assert secrets == {}, secrets
    record_figures(
        "takeover",
        {
            "lease_seconds": LEASE_S,
            "heartbeat_seconds": HEARTBEAT_S,
            "orphaned_executions": len(orphans),
            "taken_over_after_kill_s": round(taken_in, 2),
            "bound_s": BOUND_S,
            "old_fence_refused": fenced,
            "closing_orders_by_survivor": len(closes),
            "log_lines_scanned": sum(len(p.read_text().splitlines()) for p in logs),
            "secrets_found": 0,
            **counts,
        },
    )


def scan_for_secrets(logs: list[Path], dsn: str) -> dict[str, int]:
    """Occurrences of the database password (from the DSN) and REDIS_PASSWORD in the logs."""
    secrets = {"DATABASE_URL password": urlsplit(dsn).password or ""}
    secrets["REDIS_PASSWORD"] = os.environ.get("REDIS_PASSWORD", "")
    found: dict[str, int] = {}
    for path in logs:
        text = path.read_text(errors="replace")
        for name, secret in secrets.items():
            if secret and len(secret) >= 4 and secret in text:
                found[f"{name} in {path.name}"] = text.count(secret)
    return found


async def _settled(dsn: str, count: int) -> bool:
    rows = await fetch_all(
        dsn,
        "SELECT count(*) AS n, count(DISTINCT owner_id) AS owners FROM strategy_executions",
    )
    if rows[0]["n"] != count:
        return False
    open_orders = await fetch_all(
        dsn,
        "SELECT count(*) AS n FROM execution_orders WHERE NOT status = ANY($1::text[])",
        [s.value for s in OrderStatus if s.is_terminal],
    )
    return bool(open_orders[0]["n"] == 0)


async def _owners(dsn: str) -> dict[object, str]:
    rows = await fetch_all(dsn, "SELECT execution_id, owner_id FROM strategy_executions")
    return {r["execution_id"]: r["owner_id"] for r in rows}


async def _epochs(dsn: str) -> dict[object, int]:
    rows = await fetch_all(dsn, "SELECT execution_id, lease_epoch FROM strategy_executions")
    return {r["execution_id"]: r["lease_epoch"] for r in rows}


async def _all_owned_by(dsn: str, ids: list[object], owner: str) -> bool:
    rows = await fetch_all(
        dsn,
        "SELECT count(*) AS n FROM strategy_executions WHERE execution_id = ANY($1::uuid[]) "
        "AND owner_id = $2 AND lease_expires_at > now()",
        ids,
        owner,
    )
    return bool(rows[0]["n"] == len(ids))


async def _status(dsn: str, execution_id: object, status: str) -> bool:
    rows = await fetch_all(
        dsn, "SELECT status FROM strategy_executions WHERE execution_id = $1", execution_id
    )
    return bool(rows) and rows[0]["status"] == status


async def _old_fence_is_refused(dsn: str, execution_id: object, owner: str, epoch: int) -> bool:
    """A commit carrying the dead worker's fence (a paused, not dead, process) writes
    nothing: neither the state nor a risk event nor an outbox event."""
    store = await PostgresStore.connect(DatabaseConfig(url=dsn, pool_min_size=1, pool_max_size=1))
    try:
        record = await store.get_execution(execution_id)  # type: ignore[arg-type]
        assert record is not None
        risk_before = len(await store.get_risk_events(record.execution_id))
        stale = ExecutionWrite(
            execution_id=record.execution_id,
            fence=Fence(owner_id=owner, epoch=epoch),
            version=record.version + 1,
            state=dataclasses.replace(record.state, status=ExecutionStatus.ACTIVE),
            risk_events=[
                RiskEventRecord(
                    event_id=uuid.uuid4(),
                    execution_id=record.execution_id,
                    event_type="TRADING_STATE_CHANGED",
                    severity=Severity.CRITICAL,
                    description="ACTIVE -> REDUCING (written by a stale owner)",
                    action_taken="reduce",
                    occurred_at=datetime.now(UTC),
                )
            ],
        )
        outcome = await store.commit([stale])
        after = await store.get_execution(record.execution_id)
        assert after is not None
        untouched = (after.version, after.state.status) == (record.version, record.state.status)
        no_risk_row = len(await store.get_risk_events(record.execution_id)) == risk_before
        return record.execution_id in outcome.lost and untouched and no_risk_row
    finally:
        await store.close()
