"""`PostgresStore`: the `Store` protocol on an asyncpg pool.

Every public write is one transaction (reads and single statements skip BEGIN/COMMIT) with
parameterized SQL only; batches go through `unnest` of typed arrays, one statement for any
number of rows. The parts: the commit path in `writes.py`, the outbox in `outbox.py`,
leases, control requests and the report cursor in `coordination.py`, the pool plumbing in
`base.py`; connecting and the reads here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec, retention
from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.connect import connect_with_retry
from strategy_worker.adapters.postgres.coordination import CoordinationQueries
from strategy_worker.adapters.postgres.errors import MigrationError
from strategy_worker.adapters.postgres.ledger import LedgerQueries
from strategy_worker.adapters.postgres.migrate import pending_versions
from strategy_worker.adapters.postgres.outbox import ConnectOne, OutboxQueries
from strategy_worker.adapters.postgres.writes import CommitWrites
from strategy_worker.store import (
    ExecutionRecord,
    ExecutionStatus,
    FillRecord,
    LoadedExecution,
    OrderRecord,
    RiskEventRecord,
    SnapshotRecord,
    Store,
)

_RUNNING = [s.value for s in ExecutionStatus if s.is_running]

DEFAULT_LEASE_SECONDS = 15.0
"""The lease a creation gives its owner unless `connect(lease_seconds=...)` says otherwise
(the default of `execution.lease_seconds`)."""

# The relay leader's dedicated connection notices a vanished peer within about
# idle + interval * count seconds, so a dead leader's session cannot hold the lock for the
# kernel's default two hours of silence.
_LEADER_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without the reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): pooled connections never leave session state behind (their
    advisory locks are transaction-scoped, no LISTEN, no SET; the outbox leader's session
    lock lives on a connection outside the pool), and the reset was one round trip per call."""

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=jsoncodec.dumps, decoder=jsoncodec.loads, schema="pg_catalog"
        )


class PostgresStore(CommitWrites, LedgerQueries, OutboxQueries, CoordinationQueries):
    """The worker's durable state in PostgreSQL (implements `strategy_worker.store.Store`)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        where: str,
        connect_one: ConnectOne,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        super().__init__(pool, where=where)
        self._creation_lease_seconds = lease_seconds
        self._init_outbox(connect_one)

    @classmethod
    async def connect(
        cls,
        config: DatabaseConfig,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        require_schema: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> PostgresStore:
        """Open the pool, retrying with capped exponential backoff and jitter.

        `lease_seconds` is the lease a creation (`ExecutionWrite.create`) gives its owner:
        pass `execution.lease_seconds`. Fails with a one-line DatabaseUnreachableError /
        DatabaseAccessError naming host:port and the setting to fix; with `require_schema`,
        a MigrationError when migrations are pending (run `strategy-worker db migrate`).
        """
        where = config.where()

        async def attempt() -> asyncpg.Pool:
            pool = asyncpg.create_pool(
                config.dsn(),
                min_size=config.pool_min_size,
                max_size=config.pool_max_size,
                command_timeout=config.command_timeout,
                timeout=config.connect_timeout,
                init=_init_connection,
                connection_class=_PooledConnection,
            )
            try:
                await pool
                await pool.fetchval("SELECT 1")
            except BaseException:
                pool.terminate()
                raise
            return pool

        async def connect_one() -> asyncpg.Connection:
            conn = await asyncpg.connect(
                config.dsn(),
                timeout=config.connect_timeout,
                command_timeout=config.command_timeout,
                server_settings=_LEADER_KEEPALIVES,
            )
            try:
                await _init_connection(conn)
            except BaseException:
                conn.terminate()
                raise
            return conn

        pool = await connect_with_retry(
            attempt,
            where=where,
            hint=config.setting_hint(),
            attempts=config.connect_attempts,
            base=config.connect_backoff,
            cap=config.connect_backoff_max,
            sleep=sleep,
        )
        store = cls(pool, where=where, connect_one=connect_one, lease_seconds=lease_seconds)
        if require_schema:
            try:
                async with pool.acquire() as conn:
                    pending = await pending_versions(conn)
            except BaseException:
                await store.close()
                raise
            if pending:
                await store.close()
                raise MigrationError(
                    f"database at {where} lacks migration(s) {', '.join(pending)}; "
                    "run `strategy-worker db migrate`"
                )
        return store

    # --- executions -------------------------------------------------------------------
    async def existing_executions(self, execution_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these executions exist."""
        if not execution_ids:
            return set()
        async with self._conn("existing_executions") as conn:
            rows = await conn.fetch(Q.EXISTING_EXECUTIONS, list(execution_ids))
        return {r["execution_id"] for r in rows}

    async def running_strategies(
        self, strategy_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, uuid.UUID]:
        """strategy id -> its active or paused execution (the latest approved, should there
        be two); strategies with none are left out."""
        if not strategy_ids:
            return {}
        async with self._conn("running_strategies") as conn:
            rows = await conn.fetch(Q.RUNNING_STRATEGIES, list(strategy_ids), _RUNNING)
        return {r["strategy_id"]: r["execution_id"] for r in rows}

    async def get_execution(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        """The execution, or None."""
        async with self._conn("get_execution") as conn:
            row = await conn.fetchrow(Q.GET_EXECUTION, execution_id)
        return None if row is None else R.execution_from_row(row)

    async def load_executions(self, execution_ids: Collection[uuid.UUID]) -> list[LoadedExecution]:
        """The executions that exist among `execution_ids`, in that order, each with its
        orders (by intent_seq) and fills (as they happened): three queries for any number,
        read in one REPEATABLE READ snapshot so orders, fills and state agree."""
        wanted = list(dict.fromkeys(execution_ids))
        if not wanted:
            return []
        async with (
            self._conn("load_executions") as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            executions = await conn.fetch(Q.GET_EXECUTIONS, wanted)
            orders = await conn.fetch(Q.GET_ORDERS_OF, wanted)
            fills = await conn.fetch(Q.GET_FILLS_OF, wanted)
        orders_of: dict[uuid.UUID, list[OrderRecord]] = {}
        for row in orders:
            orders_of.setdefault(row["execution_id"], []).append(R.order_from_row(row))
        fills_of: dict[uuid.UUID, list[FillRecord]] = {}
        for row in fills:
            fills_of.setdefault(row["execution_id"], []).append(R.fill_from_row(row))
        records = {r["execution_id"]: R.execution_from_row(r) for r in executions}
        return [
            LoadedExecution(
                record=records[eid],
                orders=orders_of.get(eid, []),
                fills=fills_of.get(eid, []),
            )
            for eid in wanted
            if eid in records
        ]

    async def fleet_pnl(self) -> Decimal:
        """Total P&L of every execution ever run, whoever owns it (one aggregate)."""
        async with self._conn("fleet_pnl") as conn:
            total = await conn.fetchval(Q.FLEET_PNL)
        return Decimal(total)

    # --- orders, fills and history --------------------------------------------------------
    async def get_orders(self, execution_id: uuid.UUID) -> list[OrderRecord]:
        """Every order of an execution by intent_seq."""
        async with self._conn("get_orders") as conn:
            rows = await conn.fetch(Q.GET_ORDERS, execution_id)
        return [R.order_from_row(r) for r in rows]

    async def get_fills(self, execution_id: uuid.UUID) -> list[FillRecord]:
        """Every recorded fill of an execution, in the order they happened."""
        async with self._conn("get_fills") as conn:
            rows = await conn.fetch(Q.GET_FILLS, execution_id)
        return [R.fill_from_row(r) for r in rows]

    async def get_snapshots(
        self, execution_id: uuid.UUID, *, limit: int = 100
    ) -> list[SnapshotRecord]:
        """The latest snapshots of an execution, newest first."""
        async with self._conn("get_snapshots") as conn:
            rows = await conn.fetch(Q.GET_SNAPSHOTS, execution_id, limit)
        return [R.snapshot_from_row(r) for r in rows]

    async def get_risk_events(self, execution_id: uuid.UUID) -> list[RiskEventRecord]:
        """Every risk event of an execution, oldest first."""
        async with self._conn("get_risk_events") as conn:
            rows = await conn.fetch(Q.GET_RISK_EVENTS, execution_id)
        return [R.risk_event_from_row(r) for r in rows]

    async def thin_snapshots(
        self,
        *,
        now: datetime,
        fine_window: timedelta,
        hourly_window: timedelta,
        batch: int,
        trading_day_start: time,
        owner: str,
    ) -> int:
        """Snapshot retention (`adapters/postgres/retention.py`), on this store's pool."""
        return await retention.thin_snapshots(
            self._pool,
            now=now,
            fine_window=fine_window,
            hourly_window=hourly_window,
            batch=batch,
            trading_day_start=trading_day_start,
            owner=owner,
        )


if TYPE_CHECKING:  # mypy proves PostgresStore satisfies the Store protocol

    def _implements_store(store: PostgresStore) -> Store:
        return store
