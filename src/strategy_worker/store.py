"""What the runtime stores and loads, and the `Store` protocol it depends on.

The records are plain frozen values (Decimal money, aware datetimes, JSON-able mappings);
no SQL leaks out of `strategy_worker.adapters.postgres`, which implements `Store`, and
`strategy_worker.testing.memory_store` implements the same protocol in memory.

Decide, then commit: a runtime step decides without I/O and hands the store one
`ExecutionWrite` per execution it touched; `Store.commit` writes a batch of them in ONE
transaction (state, intents, order updates, fills, risk events, snapshots, control outcomes,
signal decisions and the outgoing events in the outbox), fenced by the lease: an execution
whose fence no longer holds gets none of its writes, so a paused or partitioned worker can
never write for its successor. The outbox is published by one relay (`claim_outbox`,
`mark_published`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

# Re-exported: the domain's enums are the store's vocabulary (one definition each).
from strategy_worker.domain.events import Severity as Severity
from strategy_worker.domain.ids import NAMESPACE
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import (
    Fill,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.domain.risk.state import TradingState as TradingState
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.errors import StoreError

JsonObject = Mapping[str, Any]
"""A JSON object; Decimals inside are written as strings and JSON numbers read as Decimal."""

FIRST_LEASE_EPOCH = 1
"""The lease epoch of an execution created with its first write (`ExecutionWrite.create`)."""


class ExecutionStatus(StrEnum):
    """`strategy_executions.status`, lower case as in the spec."""

    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    ERROR = "error"

    @property
    def is_running(self) -> bool:
        """Active and paused executions are owned, leased and resumed after a restart."""
        return self in (ExecutionStatus.ACTIVE, ExecutionStatus.PAUSED)


class ControlOutcome(StrEnum):
    """What became of a control request; RECEIVED until the runtime completes it."""

    RECEIVED = "RECEIVED"
    APPLIED = "APPLIED"
    REFUSED = "REFUSED"
    FAILED = "FAILED"


class LeaseLostError(StoreError):
    """A fenced write found another owner (or a newer epoch): stop driving the execution."""


class IntentConflictError(StoreError):
    """A client order id is already recorded with different content: a planning bug."""


class FillConflictError(StoreError):
    """A fill (client order id, fill id) is already recorded with different content: the OMS
    reused a fill id within one order, or a report was corrupted. Never dropped, never
    overwritten: the commit carrying it is refused whole (not retryable)."""


class OutboxLeadershipLostError(StoreError):
    """`mark_published` was called by a store that does not hold the outbox leadership (it
    lost it, e.g. its connection broke): go back to `claim_outbox`; never retry the mark."""


class ExecutionNotFoundError(StoreError):
    """The execution named by a write does not exist."""


def order_id_for(client_order_id: str) -> uuid.UUID:
    """`execution_orders.order_id`: derived from the client order id, so it is stable too."""
    return uuid.uuid5(NAMESPACE, f"order:{client_order_id}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """Proof of ownership carried by a write: the lease holder and the epoch it acquired."""

    owner_id: str
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionState:
    """The part of an execution the runtime rewrites as it trades (one row update)."""

    status: ExecutionStatus
    positions: JsonObject
    """Positions per symbol as the runtime models them (Decimals as strings in JSONB)."""
    cash: Decimal
    fees: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    total_pnl: Decimal = ZERO
    total_trades: int = 0
    winning_trades: int = 0
    losing_trades: int = 0
    trading_state: TradingState = TradingState.ACTIVE
    trading_day: date | None = None
    """The trading day `day_start_equity` belongs to; both set or both None."""
    day_start_equity: Decimal | None = None
    stop_reason: str | None = None
    stopped_at: datetime | None = None

    @classmethod
    def initial(cls, initial_capital: Decimal) -> ExecutionState:
        """A fresh active execution: all cash, no positions, no P&L."""
        return cls(status=ExecutionStatus.ACTIVE, positions={}, cash=initial_capital)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewExecution:
    """An execution to create from one approved strategy message."""

    execution_id: uuid.UUID
    """`domain.ids.execution_id_for(strategy_id, message timestamp)`."""
    strategy_id: uuid.UUID
    user_id: uuid.UUID
    approved_at: datetime
    """The message timestamp; (strategy_id, approved_at) is unique."""
    config: JsonObject
    initial_capital: Decimal
    started_at: datetime
    state: ExecutionState


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRecord:
    """An execution as stored, with its lease."""

    execution_id: uuid.UUID
    strategy_id: uuid.UUID
    user_id: uuid.UUID
    approved_at: datetime
    config: JsonObject
    initial_capital: Decimal
    started_at: datetime
    state: ExecutionState
    next_intent_seq: int
    """The intent_seq the next order intent must use."""
    version: int
    """Grows by one with every commit that touches the execution (`state_version`)."""
    owner_id: str | None
    lease_epoch: int
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime
    ledger_exposure: Decimal = ZERO
    """What the execution holds in the risk ledger (see `ExecutionWrite.exposure`)."""

    @property
    def fence(self) -> Fence | None:
        """The fence of the current owner, or None when unowned."""
        if self.owner_id is None:
            return None
        return Fence(owner_id=self.owner_id, epoch=self.lease_epoch)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRecord:
    """One `execution_orders` row: the intent plus what the OMS has said about it."""

    order_id: uuid.UUID
    client_order_id: str
    execution_id: uuid.UUID
    intent_seq: int
    symbol: str
    side: Side
    order_type: OrderType
    purpose: OrderPurpose
    quantity: Decimal
    price: Decimal
    limit_price: Decimal | None
    status: OrderStatus
    oms_order_id: str | None
    filled_quantity: Decimal
    filled_price: Decimal | None
    """Average fill price; None before the first fill."""
    fees: Decimal
    reason: str | None
    created_at: datetime
    updated_at: datetime
    # Protective orders (migration 005); defaults for every MARKET and LIMIT order.
    stop_price: Decimal | None = None
    trail: Trail | None = None
    parent_client_order_id: str = ""
    oco_group_id: str = ""
    reduce_only: bool = False

    @property
    def intent(self) -> OrderIntent:
        """The intent this order was recorded from (for resubmission after a restart)."""
        return OrderIntent(
            client_order_id=self.client_order_id,
            execution_id=self.execution_id,
            intent_seq=self.intent_seq,
            symbol=self.symbol,
            side=self.side,
            order_type=self.order_type,
            quantity=self.quantity,
            price=self.price,
            purpose=self.purpose,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
            trail=self.trail,
            parent_client_order_id=self.parent_client_order_id,
            oco_group_id=self.oco_group_id,
            reduce_only=self.reduce_only,
        )

    @property
    def is_open(self) -> bool:
        return not self.status.is_terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderUpdate:
    """A change to an order from an execution report or a reconciliation.

    The store never moves an order out of a terminal status nor lowers its filled quantity;
    such stale updates are skipped (and left out of the applied set).
    """

    client_order_id: str
    status: OrderStatus
    filled_quantity: Decimal
    filled_price: Decimal | None = None
    oms_order_id: str | None = None
    """None keeps the stored OMS order id."""
    fees: Decimal | None = None
    """Total fees of the order so far; None keeps the stored value."""
    reason: str | None = None
    """None keeps the stored reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FillRecord:
    """A fill as recorded, with the report sequence that carried it (None if reconciled).

    A fill is identified by (client order id, fill id): the OMS contract makes a fill id
    unique per order only, so two orders' fills may share an id and both are kept."""

    fill: Fill
    oms_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRecord:
    """One `position_snapshots` row; snapshot_id makes a repeated insert harmless."""

    snapshot_id: uuid.UUID
    execution_id: uuid.UUID
    taken_at: datetime
    positions: JsonObject
    total_value: Decimal
    total_pnl: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal = ZERO
    cash: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskEventRecord:
    """One `risk_events` row; event_id makes a repeated insert harmless."""

    event_id: uuid.UUID
    execution_id: uuid.UUID
    event_type: str
    severity: Severity
    description: str
    action_taken: str
    occurred_at: datetime
    details: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRequestRecord:
    """A control request (stop / pause / resume ...) and what became of it."""

    request_id: str
    execution_id: uuid.UUID | None
    requested_by: str
    action: str
    received_at: datetime
    payload: JsonObject = field(default_factory=dict)
    outcome: ControlOutcome = ControlOutcome.RECEIVED
    detail: str = ""
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlCompletion:
    """What became of a control request, written with the step that applied it."""

    request_id: str
    outcome: ControlOutcome
    detail: str
    completed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEvent:
    """One `strategy.execution` event to publish, written in the transaction that made it
    true. `event_id` is deterministic (execution, version, position) and travels as the
    Kafka `event-id` header, so consumers drop the repeats an at-least-once relay sends."""

    event_id: uuid.UUID
    execution_id: uuid.UUID
    user_id: uuid.UUID
    key: str
    """The Kafka key: the strategy id."""
    event_type: str
    payload: JsonObject
    encoded: str | None = field(default=None, compare=False)
    """The payload's wire JSON as committed, when the store read it back as text: the
    relay publishes it as it is (encoded once, at the commit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    """An outbox event as stored; `seq` orders the events of one execution as committed,
    `created_at` is when it was committed (the relay's lag is measured from it)."""

    seq: int
    event: OutboxEvent
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionWrite:
    """An execution's protective-order state (`ProtectionBook.to_json`) as of a write, and
    how many of its open positions had no live protection then (`execution_protection`)."""

    state: JsonObject
    unprotected: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionWrite:
    """Everything one step decided for one execution, written atomically (`Store.commit`).

    `fence` must hold (owner and epoch) or nothing of this write is applied; `version` is
    the execution's `state_version` after the write (one more than before; for `create`,
    FIRST_VERSION)."""

    execution_id: uuid.UUID
    fence: Fence
    version: int
    create: NewExecution | None = None
    """A new execution (created once per approved message; a replay writes nothing)."""
    state: ExecutionState | None = None
    """The new mutable state; None leaves it (and next_intent_seq) as it is."""
    next_intent_seq: int | None = None
    intents: Sequence[OrderIntent] = ()
    order_updates: Sequence[OrderUpdate] = ()
    fills: Sequence[FillRecord] = ()
    risk_events: Sequence[RiskEventRecord] = ()
    snapshots: Sequence[SnapshotRecord] = ()
    events: Sequence[OutboxEvent] = ()
    controls: Sequence[ControlCompletion] = ()
    decisions: Sequence[SignalDecision] = ()
    """Rule evaluations of this execution (`signal_decisions` rows, docs/signals.md),
    written with what they caused; a decision already recorded for the same (symbol,
    timeframe, bar, rule) is skipped (a replayed bar)."""
    release: bool = False
    """Give up the lease with this write (the execution is stopped or handed over)."""
    protection: ProtectionWrite | None = None
    """The protection state after this write (None leaves the stored one): committed with
    the protective intents it decided, before any of them is sent."""
    exposure: Decimal | None = None
    """The execution's exposure after this write, as the risk ledger counts it: its long
    market value at the marks it knew plus the remaining notional of its live buys. The
    ledger's totals (fleet, user) move by the difference to what it held; None: unchanged."""
    new_buys: Decimal = ZERO
    """Notional of the BUY intents this write records: when any write of a commit has
    some, the commit holds only if every total it moves stays within its cap."""


FIRST_VERSION = 1
"""`state_version` of a just-created execution."""


FLEET = ("fleet", "")
"""The risk ledger's fleet scope; a user's is ("user", str(user_id))."""

LedgerScope = tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerCaps:
    """The caps a commit with new buys must keep: the fleet's (`risk.max_total_exposure`)
    and, optionally, each user's (`risk.max_user_exposure`)."""

    fleet: Decimal
    user: Decimal | None = None


class LedgerRefusedError(StoreError):
    """A commit's new buys would take a ledger total past its cap: nothing was written.
    `exposure` is the total the ledger held when it refused (to decide again with)."""

    def __init__(self, scope: LedgerScope, exposure: Decimal, cap: Decimal) -> None:
        super().__init__(
            f"risk ledger {scope[0]}{':' + scope[1] if scope[1] else ''}: {exposure} "
            f"exposure, the commit's buys would pass the cap {cap}",
            retryable=False,
        )
        self.scope = scope
        self.exposure = exposure
        self.cap = cap


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerAudit:
    """What `Store.audit_ledger` found and repaired."""

    difference: Decimal
    """Sum of |ledger - recomputation| over every total (0: the ledger was exact)."""
    repaired: Mapping[uuid.UUID, tuple[Decimal, Decimal]] = field(default_factory=dict)
    """execution id -> (what the ledger held, the recomputation now held)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitOutcome:
    """What `Store.commit` did: the executions it created and those whose fence failed."""

    created: frozenset[uuid.UUID] = frozenset()
    existed: frozenset[uuid.UUID] = frozenset()
    """Creations skipped because the execution was already there (a replayed message)."""
    lost: frozenset[uuid.UUID] = frozenset()
    """Writes skipped because another worker holds the lease (or the execution is gone)."""
    ledger: Mapping[LedgerScope, Decimal] = field(default_factory=dict)
    """The ledger totals the commit moved, as they stand after it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkWrite:
    """A quiet monitor tick: new marks moved only the valuation. Applied only when the
    fence holds and the execution is still at `version` (no newer commit is overwritten)."""

    execution_id: uuid.UUID
    fence: Fence
    version: int
    unrealized_pnl: Decimal
    total_pnl: Decimal
    snapshot: SnapshotRecord | None = None
    protection: ProtectionWrite | None = None
    """Trailing watermarks ratcheted by quiet marks, written under the same conditions."""
    exposure: Decimal | None = None
    """The execution's exposure at the new marks (see `ExecutionWrite.exposure`)."""
    marks: Mapping[str, Decimal] | None = None
    """The marks the valuation used (replace `positions.marks`: what the stored unrealized
    P&L and exposure can be checked against)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedExecution:
    """An execution with everything needed to drive it again: its orders and fills."""

    record: ExecutionRecord
    orders: Sequence[OrderRecord]
    fills: Sequence[FillRecord]


class Store(Protocol):
    """Durable state of the worker. Every method is one transaction; errors are StoreError
    (`retryable` set for connection loss, timeouts, serialization failures)."""

    # --- the one write path -------------------------------------------------------------
    async def commit(
        self,
        writes: Sequence[ExecutionWrite],
        *,
        cursor: tuple[str, int] | None = None,
        caps: LedgerCaps | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> CommitOutcome:
        """Apply every write in one transaction (fenced per execution; see ExecutionWrite),
        and advance a report cursor with them. Idempotent for what is keyed: a replayed
        creation, intent, fill (by order and fill id), risk event, snapshot or outbox event
        is skipped; an intent or fill recorded before with different content raises
        IntentConflictError or FillConflictError (nothing is written).

        The risk ledger moves in the same transaction: each applied write's `exposure`
        replaces what its execution held, and the fleet's and its user's totals move by the
        difference. When any applied write has `new_buys` and `caps` is given, a total that
        ends above its cap refuses the whole commit (LedgerRefusedError): the check and the
        reservation are one statement, so no buy passes a cap across workers.

        `events` are outbox events about no execution's state (a strategy refused at
        intake), written with the rest."""
        ...

    async def ledger_totals(self, user_ids: Collection[uuid.UUID]) -> dict[LedgerScope, Decimal]:
        """The fleet's total and these users' (what other workers' commits moved)."""
        ...

    async def audit_ledger(self) -> LedgerAudit:
        """Recompute every execution's exposure from its stored positions (at its stored
        marks) and live buy orders, and every total from those; repair what differs (the
        executions' values and the totals) in one transaction. One auditor at a time."""
        ...

    async def record_marks(self, writes: Sequence[MarkWrite]) -> set[uuid.UUID]:
        """Quiet ticks in one statement; returns the ids NOT written (fence lost, or a newer
        version: the caller's view is behind, never overwritten). Each applied mark's
        `exposure` moves the risk ledger as a commit's does (never refused: no new buy)."""
        ...

    # --- executions -----------------------------------------------------------------------
    async def existing_executions(self, execution_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these executions exist (one query for a poll of replayed messages)."""
        ...

    async def running_strategies(
        self, strategy_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, uuid.UUID]:
        """strategy id -> the execution still running it (active or paused)."""
        ...

    async def get_execution(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        """The execution, or None."""
        ...

    async def load_executions(self, execution_ids: Collection[uuid.UUID]) -> list[LoadedExecution]:
        """Executions with their orders and fills (restore after a restart or takeover)."""
        ...

    async def get_orders(self, execution_id: uuid.UUID) -> list[OrderRecord]:
        """Every order of an execution by intent_seq."""
        ...

    async def load_protection(
        self, execution_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, JsonObject]:
        """The stored protection state (`ProtectionBook.to_json`) of those executions that
        have one (restore after a restart or takeover, with `load_executions`)."""
        ...

    async def get_fills(self, execution_id: uuid.UUID) -> list[FillRecord]:
        """Every recorded fill of an execution, in the order they happened."""
        ...

    async def get_snapshots(
        self, execution_id: uuid.UUID, *, limit: int = 100
    ) -> list[SnapshotRecord]:
        """The latest snapshots of an execution, newest first."""
        ...

    async def get_risk_events(self, execution_id: uuid.UUID) -> list[RiskEventRecord]:
        """Every risk event of an execution, oldest first."""
        ...

    async def fleet_pnl(self) -> Decimal:
        """Total P&L of every execution ever run (the fleet's `strategy_pnl_total`)."""
        ...

    # --- leases ---------------------------------------------------------------------------
    async def acquire_executions(
        self, owner_id: str, *, lease_seconds: float, limit: int, reclaim: bool = False
    ) -> list[ExecutionRecord]:
        """Take up to `limit` active/paused executions that are unowned or whose lease
        expired; each comes back with its new epoch (use `record.fence`). With `reclaim`
        (a restarted worker, same owner id) also those `owner_id` still holds: the previous
        process is gone, and the new epoch fences off anything it might still write."""
        ...

    async def renew_leases(
        self, owner_id: str, execution_ids: Collection[uuid.UUID], *, lease_seconds: float
    ) -> set[uuid.UUID]:
        """Extend the leases `owner_id` still holds; returns those (the others were lost)."""
        ...

    async def release_executions(
        self, owner_id: str, execution_ids: Collection[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Give up leases (graceful handover); returns those that were released."""
        ...

    # --- control requests and report cursor ---------------------------------------------
    async def record_control_request(self, request: ControlRequestRecord) -> bool:
        """Record a control request once; False when its request_id was already seen."""
        ...

    async def complete_control_request(
        self, request_id: str, outcome: ControlOutcome, *, detail: str, completed_at: datetime
    ) -> None:
        """Record what became of a request that no execution's step applied (refusals)."""
        ...

    async def get_control_request(self, request_id: str) -> ControlRequestRecord | None:
        """A recorded control request, or None."""
        ...

    async def list_pending_control_requests(
        self, execution_ids: Collection[uuid.UUID], *, strategy_ids: Collection[uuid.UUID] = ()
    ) -> list[ControlRequestRecord]:
        """Requests still RECEIVED for these executions (or, recorded without an execution
        id, for these strategies), oldest first: a request consumed by a worker that does not
        own the execution waits here until the owner applies it."""
        ...

    async def get_report_cursor(self, name: str) -> int:
        """The last report seq recorded for the stream `name` (0 when none)."""
        ...

    async def set_report_cursor(self, name: str, last_seq: int) -> None:
        """Advance the cursor (never moves it backwards)."""
        ...

    # --- the outbox -----------------------------------------------------------------------
    async def claim_outbox(self, *, limit: int) -> list[OutboxRow]:
        """Up to `limit` unpublished events, oldest first (by seq), for the relay leader.

        One caller in the whole fleet gets rows at a time, so the events of a key leave in
        the order they were committed: PostgreSQL holds a session advisory lock on a
        connection of its own for the leader (released when its process dies); any other
        caller gets [] until then."""
        ...

    async def mark_published(self, seqs: Sequence[int]) -> None:
        """Mark events published, numbering them in `seqs` order after every event
        published before (`published_seq`: one gap-free order of everything published).
        Seqs already published are skipped (a retried mark). Only the leader may call it:
        OutboxLeadershipLostError otherwise."""
        ...

    async def prune_outbox(self, *, published_before: datetime, limit: int) -> int:
        """Delete up to `limit` events published before the instant; returns how many."""
        ...

    # --- lifecycle ------------------------------------------------------------------------
    async def ping(self) -> bool:
        """True when the database answers (readiness)."""
        ...

    async def close(self) -> None:
        """Close the pool; idempotent."""
        ...
