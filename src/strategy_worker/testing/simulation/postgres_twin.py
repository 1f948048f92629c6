"""The shared side of the simulation's PostgreSQL twin (`postgres_mirror.py` has the
per-worker side): the `PostgresStore`, the one lock that puts every worker's twin calls in
the memory store's order, PostgreSQL's clock, what the memory store committed to its outbox,
the divergences the calls found, and the step comparison of the two stores
(`store_diff.py`).

Time: PostgreSQL's `now()` (lease expiry, heartbeats, `updated_at`) is the simulation's
virtual clock. The test database shadows `pg_catalog.now()` with `sim_clock.now()`, which
reads a one-row table the twin sets before each call (`install_clock`), so leases expire in
PostgreSQL exactly when they do in the memory store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterable
from datetime import datetime

import asyncpg

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import OutboxEvent
from strategy_worker.testing.memory_store import MemoryDatabase
from strategy_worker.testing.simulation.store_diff import StoreDiff
from strategy_worker.testing.virtual_time import waiting_for_real_io

EVERYTHING_EVERY = 20
"""Every this many step checks, every execution is compared, touched or not."""

CLOCK_SQL = """
CREATE SCHEMA sim_clock;
CREATE TABLE sim_clock.clock (t timestamptz NOT NULL);
INSERT INTO sim_clock.clock VALUES (now());
CREATE FUNCTION sim_clock.now() RETURNS timestamptz LANGUAGE sql STABLE
    AS 'SELECT t FROM sim_clock.clock';
"""
"""The simulation's clock inside the test database (see `install_clock`)."""


async def install_clock(conn: asyncpg.Connection, database: str) -> None:
    """Make `now()` in the store's SQL read the twin's clock: a `sim_clock.now()` function,
    and the database's search_path naming pg_catalog last, so that unqualified `now()`
    resolves to it (column defaults keep the real clock: they were bound at migration).
    Only for a throwaway test database; sessions opened afterwards see it."""
    await conn.execute(CLOCK_SQL)
    quoted = '"' + database.replace('"', '""') + '"'
    await conn.execute(f"ALTER DATABASE {quoted} SET search_path = sim_clock, public, pg_catalog")


class PostgresTwin:
    """The shared side of the mirror: the PostgreSQL store, the lock that orders every
    twin call, the clock, what was committed, and the divergences found."""

    def __init__(
        self, *, memory: MemoryDatabase, postgres: PostgresStore, admin: asyncpg.Connection
    ) -> None:
        self.memory = memory
        self.postgres = postgres
        self.admin = admin
        """A connection of its own: the clock and the step comparisons."""
        self.lock = asyncio.Lock()
        self.divergences: list[str] = []
        self.committed: list[OutboxEvent] = []
        """Every outbox event the memory store committed, in commit order."""
        self.forwarded: Counter[str] = Counter()
        """Calls made on PostgreSQL too, per Store method."""
        self.refused: Counter[str] = Counter()
        """Of those, the ones the memory store answered with an error ("method Error"):
        PostgreSQL had to refuse them alike (or, for a commit that applied and then
        raised, apply them)."""
        self.comparisons = 0
        self.touched: set[uuid.UUID] = set()
        """Executions whose lease PostgreSQL may have changed since the last comparison."""
        self.written: set[uuid.UUID] | None = set()
        """Executions PostgreSQL may have written since the last comparison (None: any)."""
        self.open_calls = 0
        """Calls the memory store answered whose caller has not resumed yet (their twin is
        in flight): the memory store is ahead of the worker until it resumes."""
        self._settled = asyncio.Event()
        self._settled.set()
        self._diff = StoreDiff(memory)
        self._clock: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def set_clock(self) -> None:
        now = self.memory.now()
        if now != self._clock:
            await self.admin.execute("UPDATE sim_clock.clock SET t = $1", now)
            self._clock = now

    async def check(self, *, full: bool = False) -> list[str]:
        """Every difference between what the two stores hold now (`store_diff.py`: the
        executions either store may have changed, all of them every `EVERYTHING_EVERY`
        checks, and with `full` the risk events and snapshots row by row), then the
        divergences found by calls since the last check."""
        self.comparisons += 1
        everything = full or self.comparisons % EVERYTHING_EVERY == 0
        async with self.lock:
            touched, self.touched = self.touched, set()
            written, self.written = (None if everything else self.written), set()
            with waiting_for_real_io():
                problems = await self._diff.compare(
                    self.admin, self.committed, touched=touched, written=written, history=full
                )
        # What the stores hold first (it names the execution and the field), then the
        # calls that were answered differently.
        found, self.divergences = [*problems, *self.divergences], []
        return found

    def touch(self, execution_ids: Iterable[uuid.UUID]) -> None:
        """PostgreSQL may have changed the leases of these executions."""
        self.touched.update(execution_ids)

    def write(self, execution_ids: Iterable[uuid.UUID] | None) -> None:
        """PostgreSQL may have written these executions (None: any of them)."""
        if execution_ids is None:
            self.written = None
        elif self.written is not None:
            self.written.update(execution_ids)

    async def settle(self) -> None:
        """Wait until no call is half done (see `open_calls`): the invariants compare the
        workers with the memory store, which a call's caller has not caught up with while
        its twin is in flight (on the memory store alone a call returns at once)."""
        while self.open_calls:
            await self._settled.wait()

    def opened(self) -> None:
        self.open_calls += 1
        self._settled.clear()

    def closed(self) -> None:
        self.open_calls -= 1
        if not self.open_calls:
            self._settled.set()

    async def drain(self) -> None:
        """Wait for twin calls still in flight (of workers that were cancelled)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, call: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
