"""`PostgresStore`: the `Store` protocol on an asyncpg pool.

Every public write is one transaction (reads and single statements skip BEGIN/COMMIT) with
parameterized SQL only. Batches go through
`unnest` of typed arrays (one round trip, and `RETURNING` tells which rows were new) or
`executemany` (pipelined) where no answer is needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.connect import connect_with_retry
from strategy_worker.adapters.postgres.coordination import CoordinationQueries
from strategy_worker.adapters.postgres.errors import MigrationError
from strategy_worker.adapters.postgres.migrate import pending_versions
from strategy_worker.domain.orders import OrderIntent, OrderStatus
from strategy_worker.store import (
    ExecutionDraft,
    ExecutionNotFoundError,
    ExecutionRecord,
    ExecutionState,
    ExecutionStatus,
    Fence,
    FillRecord,
    IntentConflictError,
    LeaseLostError,
    NewExecution,
    OrderRecord,
    OrderUpdate,
    ReportsOutcome,
    RiskEventRecord,
    SnapshotRecord,
    StateWrite,
    Store,
    order_id_for,
)

_TERMINAL = [s.value for s in OrderStatus if s.is_terminal]


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without the reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): the store never leaves session state behind (advisory locks are
    transaction-scoped, no LISTEN, no SET), and the reset was one round trip per call."""

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=jsoncodec.dumps, decoder=jsoncodec.loads, schema="pg_catalog"
        )


class PostgresStore(CoordinationQueries):
    """The worker's durable state in PostgreSQL (implements `strategy_worker.store.Store`):
    executions, orders and fills, history here; leases, control requests and the report
    cursor in `coordination.py`; the pool plumbing in `base.py`."""

    @classmethod
    async def connect(
        cls,
        config: DatabaseConfig,
        *,
        require_schema: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> PostgresStore:
        """Open the pool, retrying with capped exponential backoff and jitter.

        Fails with a one-line DatabaseUnreachableError / DatabaseAccessError naming host:port
        and the setting to fix; with `require_schema`, a MigrationError when migrations are
        pending (run `strategy-worker db migrate`).
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

        pool = await connect_with_retry(
            attempt,
            where=where,
            hint=config.setting_hint(),
            attempts=config.connect_attempts,
            base=config.connect_backoff,
            cap=config.connect_backoff_max,
            sleep=sleep,
        )
        store = cls(pool, where=where)
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
    async def create_execution(
        self,
        execution: NewExecution,
        intents: Sequence[OrderIntent] = (),
        *,
        next_intent_seq: int | None = None,
        owner_id: str | None = None,
        lease_seconds: float = 0.0,
    ) -> bool:
        """Insert the execution once (ON CONFLICT DO NOTHING on the id and on the message
        key) together with its first intents. False, and nothing written, if it existed."""
        draft = ExecutionDraft(
            execution=execution, intents=intents, next_intent_seq=next_intent_seq
        )
        created = await self.create_executions(
            [draft], owner_id=owner_id, lease_seconds=lease_seconds
        )
        return execution.execution_id in created

    async def create_executions(
        self,
        drafts: Sequence[ExecutionDraft],
        *,
        owner_id: str | None = None,
        lease_seconds: float = 0.0,
    ) -> set[uuid.UUID]:
        """The batch in one transaction; rows are inserted in execution-id order so two
        workers creating overlapping batches (a rebalance redelivery) lock in the same order
        and never deadlock. Returns the ids created."""
        if owner_id is not None and lease_seconds <= 0:
            raise ValueError("an owned execution needs lease_seconds > 0")
        ordered = sorted(drafts, key=lambda d: d.execution.execution_id)
        seqs = [
            _next_seq(d.execution.execution_id, d.intents, d.next_intent_seq, floor=1)
            for d in ordered
        ]
        created: set[uuid.UUID] = set()
        if not ordered:
            return created
        async with self._tx("create_executions") as conn:
            intents: list[OrderIntent] = []
            for draft, seq in zip(ordered, seqs, strict=True):
                execution = draft.execution
                row = await conn.fetchval(
                    Q.INSERT_EXECUTION,
                    execution.execution_id,
                    execution.strategy_id,
                    execution.user_id,
                    execution.approved_at,
                    execution.config,
                    R.num(execution.initial_capital),
                    execution.started_at,
                    seq,
                    owner_id,
                    float(lease_seconds),
                    *R.state_params(execution.state),
                )
                if row is not None:
                    created.add(execution.execution_id)
                    intents.extend(draft.intents)
            await self._insert_intents(conn, intents)
        return created

    async def existing_executions(self, execution_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these executions exist."""
        if not execution_ids:
            return set()
        async with self._conn("existing_executions") as conn:
            rows = await conn.fetch(Q.EXISTING_EXECUTIONS, list(execution_ids))
        return {r["execution_id"] for r in rows}

    async def get_execution(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        """The execution, or None."""
        async with self._conn("get_execution") as conn:
            row = await conn.fetchrow(
                Q.GET_EXECUTION,
                execution_id,
            )
        return None if row is None else R.execution_from_row(row)

    async def list_executions_by_status(
        self,
        statuses: Collection[ExecutionStatus],
        *,
        owner_id: str | None = None,
        limit: int | None = None,
    ) -> list[ExecutionRecord]:
        """Executions in any of `statuses` (only `owner_id`'s when given), oldest first."""
        async with self._conn("list_executions_by_status") as conn:
            rows = await conn.fetch(
                Q.LIST_EXECUTIONS_BY_STATUS,
                [s.value for s in statuses],
                owner_id,
                limit,
            )
        return [R.execution_from_row(r) for r in rows]

    async def update_execution_state(
        self, execution_id: uuid.UUID, state: ExecutionState, *, fence: Fence | None
    ) -> None:
        """Replace the mutable state; LeaseLostError when the fence no longer holds."""
        async with self._conn("update_execution_state") as conn:
            await self._write_state(conn, execution_id, state, fence)

    async def update_execution_states(self, writes: Sequence[StateWrite]) -> set[uuid.UUID]:
        """Many fenced state writes in one statement; returns the ids NOT written (lease
        lost or execution gone), for the caller to treat as `update_execution_state` would."""
        if not writes:
            return set()
        params = [R.state_params(w.state) for w in writes]
        columns = list(zip(*params, strict=True))
        positions = [jsoncodec.dumps(value) for value in columns[1]]
        async with self._conn("update_execution_states") as conn:
            rows = await conn.fetch(
                Q.UPDATE_STATES,
                [w.execution_id for w in writes],
                list(columns[0]),
                positions,
                *(list(column) for column in columns[2:]),
                [w.fence.owner_id if w.fence else None for w in writes],
                [w.fence.epoch if w.fence else None for w in writes],
            )
        return {w.execution_id for w in writes} - {r["execution_id"] for r in rows}

    async def _write_state(
        self,
        conn: asyncpg.Connection,
        execution_id: uuid.UUID,
        state: ExecutionState,
        fence: Fence | None,
    ) -> None:
        owner, epoch = (None, None) if fence is None else (fence.owner_id, fence.epoch)
        done = await conn.fetchval(
            Q.UPDATE_STATE, execution_id, *R.state_params(state), owner, epoch
        )
        if done is None:
            await self._raise_unwritable(conn, execution_id, fence)

    async def _raise_unwritable(
        self, conn: asyncpg.Connection, execution_id: uuid.UUID, fence: Fence | None
    ) -> None:
        row = await conn.fetchrow(
            Q.EXECUTION_HOLDER,
            execution_id,
        )
        if row is None:
            raise ExecutionNotFoundError(f"execution {execution_id} does not exist")
        raise LeaseLostError(
            f"execution {execution_id} is held by {row['owner_id'] or 'nobody'} at epoch "
            f"{row['lease_epoch']}, not by {fence.owner_id if fence else '?'} at epoch "
            f"{fence.epoch if fence else '?'}"
        )

    # --- orders and fills -------------------------------------------------------------
    async def record_intents(
        self,
        execution_id: uuid.UUID,
        intents: Sequence[OrderIntent],
        *,
        next_intent_seq: int,
        state: ExecutionState | None = None,
        fence: Fence | None,
    ) -> list[str]:
        """Record intents, advance next_intent_seq and (optionally) the state, atomically.

        The fenced execution update runs first: it locks the execution row, so concurrent
        recordings for one execution serialize. Returns the new client order ids.
        """
        seq = _next_seq(execution_id, intents, next_intent_seq, floor=1)
        owner, epoch = (None, None) if fence is None else (fence.owner_id, fence.epoch)
        async with self._tx("record_intents") as conn:
            if state is not None:
                await self._write_state(conn, execution_id, state, fence)
            done = await conn.fetchval(Q.ADVANCE_INTENT_SEQ, execution_id, seq, owner, epoch)
            if done is None:
                await self._raise_unwritable(conn, execution_id, fence)
            return await self._insert_intents(conn, intents)

    async def _insert_intents(
        self, conn: asyncpg.Connection, intents: Sequence[OrderIntent]
    ) -> list[str]:
        if not intents:
            return []
        new = await conn.fetch(
            Q.INSERT_INTENTS,
            [order_id_for(i.client_order_id) for i in intents],
            [i.execution_id for i in intents],
            [i.client_order_id for i in intents],
            [i.intent_seq for i in intents],
            [i.symbol for i in intents],
            [i.side.value for i in intents],
            [i.order_type.value for i in intents],
            [i.purpose.value for i in intents],
            [R.num(i.quantity) for i in intents],
            [R.num(i.price) for i in intents],
            [R.opt_num(i.limit_price) for i in intents],
        )
        new_ids = {r["client_order_id"] for r in new}
        seen = [i for i in intents if i.client_order_id not in new_ids]
        if seen:
            rows = await conn.fetch(
                Q.GET_ORDERS_BY_CLIENT_ID,
                [i.client_order_id for i in seen],
            )
            stored = {r["client_order_id"]: R.order_from_row(r).intent for r in rows}
            for intent in seen:
                if stored.get(intent.client_order_id) != intent:
                    raise IntentConflictError(
                        f"order intent {intent.client_order_id} (seq {intent.intent_seq}) is "
                        "already recorded with different content"
                    )
        return [i.client_order_id for i in intents if i.client_order_id in new_ids]

    async def get_orders(self, execution_id: uuid.UUID) -> list[OrderRecord]:
        """Every order of an execution by intent_seq."""
        async with self._conn("get_orders") as conn:
            rows = await conn.fetch(
                Q.GET_ORDERS,
                execution_id,
            )
        return [R.order_from_row(r) for r in rows]

    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        """One order by client order id, or None."""
        async with self._conn("get_order") as conn:
            row = await conn.fetchrow(
                Q.GET_ORDER,
                client_order_id,
            )
        return None if row is None else R.order_from_row(row)

    async def list_open_orders(
        self, *, execution_id: uuid.UUID | None = None, owner_id: str | None = None
    ) -> list[OrderRecord]:
        """Open orders of one execution, of `owner_id`'s executions, or of all."""
        async with self._conn("list_open_orders") as conn:
            rows = await conn.fetch(
                Q.LIST_OPEN_ORDERS,
                _TERMINAL,
                execution_id,
                owner_id,
            )
        return [R.order_from_row(r) for r in rows]

    async def record_order_reports(
        self,
        *,
        updates: Sequence[OrderUpdate] = (),
        fills: Sequence[FillRecord] = (),
        states: Sequence[StateWrite] = (),
        cursor: tuple[str, int] | None = None,
    ) -> ReportsOutcome:
        """Fills, order updates, execution states and the report cursor in one transaction.

        Fills are idempotent on fill_id; a fill for an unknown client order id is a
        StoreError (it must never be dropped silently). A lost fence rolls everything back.
        """
        latest = _merge_updates(updates)
        async with self._tx("record_order_reports") as conn:
            new_fills: set[str] = set()
            if fills:
                rows = await conn.fetch(
                    Q.INSERT_FILLS,
                    [f.fill.fill_id for f in fills],
                    [f.fill.client_order_id for f in fills],
                    [f.fill.symbol for f in fills],
                    [f.fill.side.value for f in fills],
                    [R.num(f.fill.quantity) for f in fills],
                    [R.num(f.fill.price) for f in fills],
                    [R.num(f.fill.fee) for f in fills],
                    [f.fill.filled_at for f in fills],
                    [f.oms_seq for f in fills],
                )
                new_fills = {r["fill_id"] for r in rows}
            applied: set[str] = set()
            if latest:
                ups = list(latest.values())
                rows = await conn.fetch(
                    Q.APPLY_ORDER_UPDATES,
                    [u.client_order_id for u in ups],
                    [u.status.value for u in ups],
                    [R.num(u.filled_quantity) for u in ups],
                    [R.opt_num(u.filled_price) for u in ups],
                    [u.oms_order_id for u in ups],
                    [R.opt_num(u.fees) for u in ups],
                    [u.reason for u in ups],
                    _TERMINAL,
                )
                applied = {r["client_order_id"] for r in rows}
            # In execution_id order, as every multi-row writer locks them: no deadlock.
            for write in sorted(states, key=lambda w: w.execution_id):
                await self._write_state(conn, write.execution_id, write.state, write.fence)
            if cursor is not None:
                await conn.execute(Q.SET_REPORT_CURSOR, cursor[0], cursor[1])
        return ReportsOutcome(new_fill_ids=frozenset(new_fills), applied_updates=frozenset(applied))

    async def get_fills(self, execution_id: uuid.UUID) -> list[FillRecord]:
        """Every recorded fill of an execution, in the order they happened."""
        async with self._conn("get_fills") as conn:
            rows = await conn.fetch(
                Q.GET_FILLS,
                execution_id,
            )
        return [R.fill_from_row(r) for r in rows]

    # --- history ----------------------------------------------------------------------
    async def insert_snapshots(self, snapshots: Sequence[SnapshotRecord]) -> None:
        """One pipelined batch; a repeated snapshot_id is ignored."""
        if not snapshots:
            return
        async with self._tx("insert_snapshots") as conn:
            await conn.executemany(
                Q.INSERT_SNAPSHOT,
                [
                    (
                        s.snapshot_id,
                        s.execution_id,
                        s.taken_at,
                        s.positions,
                        R.num(s.total_value),
                        R.num(s.total_pnl),
                        R.num(s.unrealized_pnl),
                        R.num(s.realized_pnl),
                        R.opt_num(s.cash),
                    )
                    for s in snapshots
                ],
            )

    async def insert_risk_events(self, events: Sequence[RiskEventRecord]) -> None:
        """One pipelined batch; a repeated event_id is ignored."""
        if not events:
            return
        async with self._tx("insert_risk_events") as conn:
            await conn.executemany(
                Q.INSERT_RISK_EVENT,
                [
                    (
                        e.event_id,
                        e.execution_id,
                        e.event_type,
                        e.severity.value,
                        e.description,
                        e.action_taken,
                        e.details,
                        e.occurred_at,
                    )
                    for e in events
                ],
            )

    async def get_snapshots(
        self, execution_id: uuid.UUID, *, limit: int = 100
    ) -> list[SnapshotRecord]:
        """The latest snapshots of an execution, newest first."""
        async with self._conn("get_snapshots") as conn:
            rows = await conn.fetch(
                Q.GET_SNAPSHOTS,
                execution_id,
                limit,
            )
        return [R.snapshot_from_row(r) for r in rows]

    async def get_risk_events(self, execution_id: uuid.UUID) -> list[RiskEventRecord]:
        """Every risk event of an execution, oldest first."""
        async with self._conn("get_risk_events") as conn:
            rows = await conn.fetch(
                Q.GET_RISK_EVENTS,
                execution_id,
            )
        return [R.risk_event_from_row(r) for r in rows]


def _next_seq(
    execution_id: uuid.UUID, intents: Sequence[OrderIntent], given: int | None, *, floor: int
) -> int:
    """Validate intents against their execution and return the next_intent_seq to store."""
    for intent in intents:
        if intent.execution_id != execution_id:
            raise ValueError(
                f"intent {intent.client_order_id} belongs to {intent.execution_id}, "
                f"not {execution_id}"
            )
    highest = max((i.intent_seq for i in intents), default=floor - 1)
    seq = highest + 1 if given is None else given
    if seq <= highest or seq < floor:
        raise ValueError(f"next_intent_seq {seq} must exceed the highest intent_seq {highest}")
    return seq


def _merge_updates(updates: Sequence[OrderUpdate]) -> dict[str, OrderUpdate]:
    """One update per order (an UPDATE ... FROM must not see an order twice): later updates
    win, but a field a later update leaves None keeps the earlier value (ack then fill)."""
    merged: dict[str, OrderUpdate] = {}
    for update in updates:
        before = merged.get(update.client_order_id)
        if before is not None:
            update = dataclasses.replace(
                update,
                oms_order_id=update.oms_order_id or before.oms_order_id,
                filled_price=before.filled_price
                if update.filled_price is None
                else update.filled_price,
                fees=before.fees if update.fees is None else update.fees,
                reason=before.reason if update.reason is None else update.reason,
            )
        merged[update.client_order_id] = update
    return merged


if TYPE_CHECKING:  # mypy proves PostgresStore satisfies the Store protocol

    def _implements_store(store: PostgresStore) -> Store:
        return store
