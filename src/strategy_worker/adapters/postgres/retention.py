"""Retention of `position_snapshots`: every snapshot for a while, then hourly, then daily.

The monitor writes a snapshot per execution per cycle: 14.4 million rows a day at 10,000
executions and 60 s. `thin_snapshots` keeps (README "Persistence", docs/retention.md):

- every snapshot taken in the last `fine_window` (up to the start of that hour: whole
  hours only are thinned);
- older ones, up to `hourly_window`: per execution and hour, the last snapshot (the
  hour's close), the one with the lowest and the one with the highest `total_value`;
- older still: the same three per execution and trading day (days start at
  `trading_day_start`, UTC, as the daily loss limit's do).
Hours are hours of the trading day (they start at `trading_day_start`'s minutes past the
hour, UTC hours for the default 00:00), so a day is made of whole hours and what the daily
rule keeps is always among what the hourly rule kept;
- always the first and the latest snapshot of every execution.

So the equity curve keeps its closes at each grain, and its lows and highs (drawdowns and
run-ups across buckets survive thinning); a report's return, daily returns and maximum
drawdown read the same figures from the thinned table.

Never blocking the worker: every statement is short and stands alone (no transaction spans
a run; deletes go by primary key in batches of at most `batch` rows). A DELETE locks only
the rows it removes, which nobody writes again; inserting a snapshot takes no lock a delete
holds (the foreign key locks the execution row, not its snapshots), so the monitor's inserts
never wait for this. Progress and a lease live in `snapshot_retention` (migration 006): each
run reads only rows that crossed a window since the last run, and one worker runs at a time
(another gets 0 at once). Rows are only ever deleted, and by rules whose kept rows include
the next coarser rule's, so an interrupted or concurrent run can never delete too much.
"""

from __future__ import annotations

import asyncio
import time as _time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg

from strategy_worker.adapters.postgres.connect import to_store_error
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger

_log = get_logger(__name__)

_DAY = timedelta(days=1)
_NO_ID = uuid.UUID(int=0)

_CLAIM = """
UPDATE snapshot_retention
SET lease_owner = $1, lease_until = clock_timestamp() + $2::interval, updated_at = now()
WHERE name = 'position_snapshots'
  AND (lease_until IS NULL OR lease_until < clock_timestamp() OR lease_owner = $1)
RETURNING hourly_before, daily_before
"""

_RENEW = """
UPDATE snapshot_retention SET lease_until = clock_timestamp() + $2::interval
WHERE name = 'position_snapshots' AND lease_owner = $1
RETURNING 1
"""

_FINISH = """
UPDATE snapshot_retention
SET daily_before = GREATEST(daily_before, $2), hourly_before = GREATEST(hourly_before, $3),
    lease_owner = NULL, lease_until = NULL, updated_at = now()
WHERE name = 'position_snapshots' AND lease_owner = $1
"""

_RELEASE = """
UPDATE snapshot_retention SET lease_owner = NULL, lease_until = NULL
WHERE name = 'position_snapshots' AND lease_owner = $1
"""

_EXECUTIONS = """
SELECT execution_id FROM strategy_executions
WHERE execution_id > $1 ORDER BY execution_id LIMIT $2
"""

# First and latest snapshot of each execution of a page (those without one drop out).
_ENDS = """
SELECT e.id AS execution_id, f.snapshot_id AS first_id, f.taken_at AS first_at,
       l.snapshot_id AS latest_id
FROM unnest($1::uuid[]) AS e(id)
CROSS JOIN LATERAL (
    SELECT snapshot_id, taken_at FROM position_snapshots s
    WHERE s.execution_id = e.id ORDER BY taken_at, snapshot_id LIMIT 1) AS f
CROSS JOIN LATERAL (
    SELECT snapshot_id FROM position_snapshots s
    WHERE s.execution_id = e.id ORDER BY taken_at DESC, snapshot_id DESC LIMIT 1) AS l
"""

# Snapshots in [$2, $3) that are neither the last, the lowest nor the highest of their
# bucket ($4: 'hour' or 'day', buckets starting $5 after UTC midnight). Ties: the later
# snapshot (then the greater id) ranks first, so the choice is the same on every run.
_DOOMED = """
SELECT snapshot_id FROM (
    SELECT snapshot_id,
        row_number() OVER (PARTITION BY execution_id, bucket
                           ORDER BY taken_at DESC, snapshot_id DESC) AS by_time,
        row_number() OVER (PARTITION BY execution_id, bucket
                           ORDER BY total_value, taken_at DESC, snapshot_id DESC) AS by_low,
        row_number() OVER (PARTITION BY execution_id, bucket
                           ORDER BY total_value DESC, taken_at DESC, snapshot_id DESC) AS by_high
    FROM (
        SELECT snapshot_id, execution_id, taken_at, total_value,
               date_trunc($4, (taken_at AT TIME ZONE 'UTC') - $5::interval) AS bucket
        FROM position_snapshots
        WHERE execution_id = ANY($1::uuid[]) AND taken_at >= $2 AND taken_at < $3
    ) AS candidates
) AS ranked
WHERE by_time > 1 AND by_low > 1 AND by_high > 1
"""

_DELETE = "DELETE FROM position_snapshots WHERE snapshot_id = ANY($1::uuid[])"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionWindows:
    """Where the grains meet for a run at `now` (all aware UTC instants)."""

    daily_before: datetime
    """Start of the trading day `hourly_window` ago: older snapshots are thinned per day."""
    hourly_before: datetime
    """Start of the hour `fine_window` ago: older snapshots are thinned per hour."""

    @classmethod
    def at(
        cls,
        now: datetime,
        *,
        fine_window: timedelta,
        hourly_window: timedelta,
        trading_day_start: time = time(0),
    ) -> RetentionWindows:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not timedelta(0) < fine_window < hourly_window:
            raise ValueError("need 0 < fine_window < hourly_window")
        return cls(
            daily_before=trading_day_floor(now - hourly_window, trading_day_start),
            hourly_before=hour_floor(now - fine_window, trading_day_start),
        )


def hour_floor(moment: datetime, trading_day_start: time = time(0)) -> datetime:
    """The start of the hour of the trading day `moment` is in (hours start at
    `trading_day_start`'s minutes and seconds past the UTC hour)."""
    offset = _offset(trading_day_start)
    shifted = moment.astimezone(UTC) - offset
    return shifted.replace(minute=0, second=0, microsecond=0) + offset


def trading_day_floor(moment: datetime, trading_day_start: time = time(0)) -> datetime:
    """The start of the trading day `moment` is in (days start at `trading_day_start` UTC)."""
    offset = _offset(trading_day_start)
    shifted = moment.astimezone(UTC) - offset
    return shifted.replace(hour=0, minute=0, second=0, microsecond=0) + offset


async def thin_snapshots(
    db: Any,
    *,
    now: datetime,
    fine_window: timedelta,
    hourly_window: timedelta,
    batch: int = 1000,
    trading_day_start: time = time(0),
    executions_per_query: int = 100,
    owner: str | None = None,
    lease: timedelta = timedelta(minutes=5),
) -> int:
    """Thin `position_snapshots` as of `now` (the worker's clock); returns the rows deleted.

    `db` is an asyncpg Pool (a connection is taken per statement and given back at once)
    or a Connection. Returns 0 at once while another run holds the lease. Errors are
    StoreError (retryable when the database is away); whatever was deleted stays deleted
    and the next run picks up where the windows say.
    """
    if batch < 1 or executions_per_query < 1:
        raise ValueError("batch and executions_per_query must be at least 1")
    windows = RetentionWindows.at(
        now,
        fine_window=fine_window,
        hourly_window=hourly_window,
        trading_day_start=trading_day_start,
    )
    run = _Run(
        db,
        windows=windows,
        batch=batch,
        offset=_offset(trading_day_start),
        page_size=executions_per_query,
        owner=owner or f"retention-{uuid.uuid4().hex[:12]}",
        lease=lease,
    )
    try:
        return await run.execute()
    except StoreError:
        raise
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise to_store_error(exc, "thin_snapshots") from exc


class _Run:
    """One thinning run: claim the lease, walk the executions page by page, finish."""

    def __init__(
        self,
        db: Any,
        *,
        windows: RetentionWindows,
        batch: int,
        offset: timedelta,
        page_size: int,
        owner: str,
        lease: timedelta,
    ) -> None:
        self._db = db
        self._windows = windows
        self._batch = batch
        self._offset = offset
        self._page_size = page_size
        self._owner = owner
        self._lease = lease
        self.deleted = 0

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn:
                yield conn
        else:
            yield self._db

    async def execute(self) -> int:
        started = _time.perf_counter()
        async with self._conn() as conn:
            claimed = await conn.fetchrow(_CLAIM, self._owner, self._lease)
        if claimed is None:
            return 0  # another worker is thinning
        finished = False
        try:
            daily_lo, hourly_lo = self._lower_bounds(claimed)
            after = _NO_ID
            while True:
                async with self._conn() as conn:
                    page = [
                        r["execution_id"]
                        for r in await conn.fetch(_EXECUTIONS, after, self._page_size)
                    ]
                if not page:
                    break
                await self._thin_page(page, daily_lo, hourly_lo)
                after = page[-1]
                async with self._conn() as conn:
                    if await conn.fetchval(_RENEW, self._owner, self._lease) is None:
                        _log.warning("snapshot retention lease lost; stopping this run")
                        return self.deleted
            windows = self._windows
            hourly_done = windows.hourly_before if hourly_lo < windows.hourly_before else None
            async with self._conn() as conn:
                await conn.execute(_FINISH, self._owner, windows.daily_before, hourly_done)
            finished = True
        finally:
            if not finished:
                async with self._conn() as conn:
                    await conn.execute(_RELEASE, self._owner)
        _log.info(
            "position snapshots thinned",
            deleted=self.deleted,
            daily_before=self._windows.daily_before.isoformat(),
            hourly_before=self._windows.hourly_before.isoformat(),
            seconds=round(_time.perf_counter() - started, 3),
        )
        return self.deleted

    def _lower_bounds(self, claimed: Any) -> tuple[datetime | None, datetime]:
        """Where each grain's work starts: the previous run's windows (None: the start of
        each execution's history for the daily grain)."""
        daily_lo: datetime | None = claimed["daily_before"]
        previous_hourly: datetime | None = claimed["hourly_before"]
        hourly_lo = self._windows.daily_before
        if previous_hourly is not None and previous_hourly > hourly_lo:
            hourly_lo = previous_hourly
        return daily_lo, hourly_lo

    async def _thin_page(
        self, page: Sequence[uuid.UUID], daily_lo: datetime | None, hourly_lo: datetime
    ) -> None:
        async with self._conn() as conn:
            ends = await conn.fetch(_ENDS, page)
        if not ends:
            return
        ids = [r["execution_id"] for r in ends]
        keep = {r["first_id"] for r in ends} | {r["latest_id"] for r in ends}
        earliest = min(r["first_at"] for r in ends)
        windows = self._windows
        start = trading_day_floor(earliest, _time_of(self._offset))
        if daily_lo is not None and daily_lo > start:
            start = daily_lo  # the days before were thinned by an earlier run
        for lo, hi in _day_slices(start, windows.daily_before):
            await self._thin_slice(ids, keep, lo, hi, "day", self._offset)
        start = max(hourly_lo, hour_floor(earliest, _time_of(self._offset)))
        for lo, hi in self._hour_slices(start, windows.hourly_before):
            await self._thin_slice(ids, keep, lo, hi, "hour", self._offset)

    def _hour_slices(self, lo: datetime, hi: datetime) -> Iterator[tuple[datetime, datetime]]:
        """[lo, hi) cut at the starts of trading days: whole hours, at most a day each."""
        day_start = _time_of(self._offset)
        while lo < hi:
            end = min(trading_day_floor(lo, day_start) + _DAY, hi)
            yield lo, end
            lo = end

    async def _thin_slice(
        self,
        ids: Sequence[uuid.UUID],
        keep: set[uuid.UUID],
        lo: datetime,
        hi: datetime,
        unit: str,
        offset: timedelta,
    ) -> None:
        async with self._conn() as conn:
            rows = await conn.fetch(_DOOMED, ids, lo, hi, unit, offset)
        doomed = [r["snapshot_id"] for r in rows if r["snapshot_id"] not in keep]
        for first in range(0, len(doomed), self._batch):
            chunk = doomed[first : first + self._batch]
            async with self._conn() as conn:
                status = await conn.execute(_DELETE, chunk)
            self.deleted += _count(status)
            await asyncio.sleep(0)  # let the worker's tasks run between batches


def _offset(trading_day_start: time) -> timedelta:
    return timedelta(
        hours=trading_day_start.hour,
        minutes=trading_day_start.minute,
        seconds=trading_day_start.second,
    )


def _time_of(offset: timedelta) -> time:
    seconds = int(offset.total_seconds())
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def _day_slices(lo: datetime, hi: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[lo, hi) in steps of one day (lo is the start of a trading day)."""
    while lo < hi:
        yield lo, min(lo + _DAY, hi)
        lo += _DAY


def _count(status: str) -> int:
    """Rows of a command status such as 'DELETE 42'."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0
