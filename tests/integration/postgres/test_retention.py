"""Retention of position_snapshots on the real PostgreSQL (adapters/postgres/retention.py).

Thousands of snapshots across days for several executions are thinned, and exactly the
rows the rules keep remain: an independent computation in Python of the rules in
docs/retention.md (every snapshot in the fine window; per hour, then per trading day,
the last, the lowest and the highest total value; the first and the latest of each
execution). A snapshot insert never waits for a thinning batch.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.adapters.postgres.retention import (
    RetentionWindows,
    hour_floor,
    thin_snapshots,
    trading_day_floor,
)
from strategy_worker.store import MarkWrite, SnapshotRecord

from .factories import create, new_execution

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 1, 0, 3, tzinfo=UTC)
FINE = timedelta(days=1)
HOURLY = timedelta(days=3)

Row = tuple[uuid.UUID, uuid.UUID, datetime, Decimal]  # snapshot, execution, taken_at, value


@pytest.fixture(autouse=True)
async def _empty_snapshots(raw_conn: asyncpg.Connection) -> None:
    """Each test owns the module database's snapshots and the retention progress."""
    await raw_conn.execute("DELETE FROM position_snapshots")
    await raw_conn.execute(
        "UPDATE snapshot_retention SET hourly_before = NULL, daily_before = NULL, "
        "lease_owner = NULL, lease_until = NULL"
    )


async def _executions(store: PostgresStore, count: int) -> list[uuid.UUID]:
    return [(await create(store, new_execution())).execution_id for _ in range(count)]


def _series(
    execution_id: uuid.UUID, start: datetime, end: datetime, every: timedelta, seed: int
) -> list[Row]:
    """Snapshots every `every`, values from a small set so that ties happen."""
    rng = random.Random(seed)
    rows, at = [], start
    while at < end:
        value = Decimal(100_000 + rng.randrange(-40, 40) * 25)
        rows.append((uuid.UUID(int=rng.getrandbits(128)), execution_id, at, value))
        at += every
    return rows


async def _insert(conn: asyncpg.Connection, rows: Iterable[Row]) -> None:
    await conn.executemany(
        "INSERT INTO position_snapshots (snapshot_id, execution_id, taken_at, positions, "
        "total_value, total_pnl, unrealized_pnl) VALUES ($1, $2, $3, '{}'::jsonb, $4, 0, 0)",
        list(rows),
    )


async def _remaining(conn: asyncpg.Connection) -> set[uuid.UUID]:
    return {
        r["snapshot_id"] for r in await conn.fetch("SELECT snapshot_id FROM position_snapshots")
    }


def _expected(rows: list[Row], now: datetime, day_start: time = time(0)) -> set[uuid.UUID]:
    """The rules, computed independently of the SQL."""
    windows = RetentionWindows.at(
        now, fine_window=FINE, hourly_window=HOURLY, trading_day_start=day_start
    )
    keep: set[uuid.UUID] = set()
    by_execution: dict[uuid.UUID, list[Row]] = {}
    for row in rows:
        by_execution.setdefault(row[1], []).append(row)
    for series in by_execution.values():
        ordered = sorted(series, key=lambda r: (r[2], r[0]))
        keep |= {ordered[0][0], ordered[-1][0]}
        buckets: dict[tuple[str, datetime], list[Row]] = {}
        for row in ordered:
            at = row[2]
            if at >= windows.hourly_before:
                keep.add(row[0])  # the fine window
            elif at >= windows.daily_before:
                buckets.setdefault(("hour", hour_floor(at, day_start)), []).append(row)
            else:
                buckets.setdefault(("day", trading_day_floor(at, day_start)), []).append(row)
        for bucket in buckets.values():
            latest_first = sorted(bucket, key=lambda r: (r[2], r[0].int), reverse=True)
            keep.add(latest_first[0][0])  # the close
            keep.add(min(latest_first, key=lambda r: r[3])[0])  # the low (latest on ties)
            keep.add(max(latest_first, key=lambda r: r[3])[0])  # the high (latest on ties)
    return keep


async def test_thinning_keeps_exactly_the_fine_window_and_the_hourly_and_daily_extremes(
    store: PostgresStore, raw_conn: asyncpg.Connection, migrated_dsn: str
) -> None:
    # Arrange: three running executions with a snapshot every 5 minutes for 8 days (2,304
    # each), and one that stopped on day 2 (all its snapshots are old).
    running = await _executions(store, 3)
    (stopped,) = await _executions(store, 1)
    end = START + timedelta(days=8)
    rows = [
        r for n, e in enumerate(running) for r in _series(e, START, end, timedelta(minutes=5), n)
    ]
    rows += _series(stopped, START, START + timedelta(days=1, hours=7), timedelta(minutes=5), 9)
    await _insert(raw_conn, rows)
    now = end + timedelta(minutes=1)
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=2)

    # Act
    try:
        deleted = await thin_snapshots(
            pool, now=now, fine_window=FINE, hourly_window=HOURLY, batch=500
        )
    finally:
        await pool.close()

    # Assert
    remaining = await _remaining(raw_conn)
    expected = _expected(rows, now)
    assert remaining == expected
    assert deleted == len(rows) - len(expected)
    assert len(rows) > 7000
    assert deleted > 0.75 * len(rows)


async def test_later_runs_thin_only_what_crossed_a_window_and_match_a_fresh_computation(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Trading days starting at 13:30 UTC; runs every few hours while snapshots keep coming.
    day_start = time(13, 30)
    (execution,) = await _executions(store, 1)
    rows = _series(execution, START, START + timedelta(days=5), timedelta(minutes=2), 3)
    await _insert(raw_conn, rows)
    now = START + timedelta(days=5)

    for step in range(6):
        await thin_snapshots(
            raw_conn,
            now=now,
            fine_window=FINE,
            hourly_window=HOURLY,
            batch=250,
            trading_day_start=day_start,
        )
        assert await _remaining(raw_conn) == _expected(rows, now, day_start), f"run {step}"
        more = _series(execution, now, now + timedelta(hours=7), timedelta(minutes=2), 10 + step)
        await _insert(raw_conn, more)
        rows += more
        now += timedelta(hours=7)

    again = await thin_snapshots(
        raw_conn,
        now=now - timedelta(hours=7),
        fine_window=FINE,
        hourly_window=HOURLY,
        trading_day_start=day_start,
    )
    assert again == 0


class _Recorder:
    """A connection that reports how many rows each DELETE removed."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.deletes: list[int] = []

    async def fetch(self, *args: Any) -> Any:
        return await self._conn.fetch(*args)

    async def fetchrow(self, *args: Any) -> Any:
        return await self._conn.fetchrow(*args)

    async def fetchval(self, *args: Any) -> Any:
        return await self._conn.fetchval(*args)

    async def execute(self, query: str, *args: Any) -> str:
        status: str = await self._conn.execute(query, *args)
        if status.startswith("DELETE"):
            self.deletes.append(int(status.split()[-1]))
        return status


async def test_deletes_go_in_batches_no_larger_than_asked(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    (execution,) = await _executions(store, 1)
    rows = _series(execution, START, START + timedelta(days=6), timedelta(minutes=1), 4)
    await _insert(raw_conn, rows)
    recorder = _Recorder(raw_conn)

    deleted = await thin_snapshots(
        recorder, now=START + timedelta(days=6), fine_window=FINE, hourly_window=HOURLY, batch=300
    )

    assert deleted == sum(recorder.deletes) > 5000
    assert max(recorder.deletes) <= 300


async def test_a_snapshot_insert_never_waits_for_a_thinning_batch(
    store: PostgresStore, raw_conn: asyncpg.Connection, migrated_dsn: str
) -> None:
    # Arrange: a batch delete of old snapshots left open (as if the batch were slow), and
    # a thinning run going on at the same time.
    record = await create(store, new_execution())
    execution = record.execution_id
    rows = _series(execution, START, START + timedelta(days=6), timedelta(minutes=1), 5)
    await _insert(raw_conn, rows)
    now = START + timedelta(days=6)
    held = await asyncpg.connect(migrated_dsn)
    inserter = await asyncpg.connect(migrated_dsn)
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=2)
    try:
        await inserter.execute("SET lock_timeout = '500ms'")
        transaction = held.transaction()
        await transaction.start()
        await held.execute(
            "DELETE FROM position_snapshots WHERE snapshot_id = ANY($1::uuid[])",
            [r[0] for r in rows[10:2000]],
        )
        thinning = asyncio.create_task(
            thin_snapshots(pool, now=now, fine_window=FINE, hourly_window=HOURLY, batch=100)
        )

        # Act: the monitor's quiet ticks (a mark and a snapshot) for the same execution,
        # meanwhile, and plain inserts.
        assert record.fence is not None
        for n in range(20):
            skipped = await store.record_marks(
                [
                    MarkWrite(
                        execution_id=execution,
                        fence=record.fence,
                        version=record.version,
                        unrealized_pnl=Decimal(0),
                        total_pnl=Decimal(0),
                        snapshot=SnapshotRecord(
                            snapshot_id=uuid.uuid4(),
                            execution_id=execution,
                            taken_at=now + timedelta(seconds=n),
                            positions={},
                            total_value=Decimal("100000"),
                            total_pnl=Decimal(0),
                            unrealized_pnl=Decimal(0),
                        ),
                    )
                ]
            )
            assert skipped == set()
            await inserter.execute(
                "INSERT INTO position_snapshots (snapshot_id, execution_id, taken_at, positions,"
                " total_value, total_pnl, unrealized_pnl) "
                "VALUES ($1, $2, $3, '{}'::jsonb, 1, 0, 0)",
                uuid.uuid4(),
                execution,
                now + timedelta(seconds=n, milliseconds=500),
            )
            await asyncio.sleep(0.01)
        await transaction.rollback()
        await asyncio.wait_for(thinning, timeout=60)
    finally:
        await pool.close()
        await held.close()
        await inserter.close()

    # Assert: every insert went through (none hit the lock timeout) and landed.
    newer = await raw_conn.fetchval(
        "SELECT count(*) FROM position_snapshots WHERE taken_at >= $1", now
    )
    assert newer == 40


async def test_a_second_worker_does_not_thin_while_the_first_holds_the_lease(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    (execution,) = await _executions(store, 1)
    rows = _series(execution, START, START + timedelta(days=5), timedelta(minutes=5), 6)
    await _insert(raw_conn, rows)
    await raw_conn.execute(
        "UPDATE snapshot_retention SET lease_owner = 'worker-a', "
        "lease_until = clock_timestamp() + interval '1 minute'"
    )
    now = START + timedelta(days=5)

    blocked = await thin_snapshots(
        raw_conn, now=now, fine_window=FINE, hourly_window=HOURLY, owner="worker-b"
    )
    owner_run = await thin_snapshots(
        raw_conn, now=now, fine_window=FINE, hourly_window=HOURLY, owner="worker-a"
    )

    assert blocked == 0
    assert owner_run > 0
    assert await _remaining(raw_conn) == _expected(rows, now)
    lease = await raw_conn.fetchrow("SELECT lease_owner, lease_until FROM snapshot_retention")
    assert (lease["lease_owner"], lease["lease_until"]) == (None, None)


def test_windows_reject_a_fine_window_not_shorter_than_the_hourly_one() -> None:
    with pytest.raises(ValueError, match="fine_window < hourly_window"):
        RetentionWindows.at(START, fine_window=HOURLY, hourly_window=FINE)
