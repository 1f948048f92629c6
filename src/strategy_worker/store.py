"""What the runtime stores and loads, and the `Store` protocol it depends on.

The records are plain frozen values (Decimal money, aware datetimes, JSON-able mappings);
no SQL leaks out of `strategy_worker.adapters.postgres`, which implements `Store`.

Ownership: an execution is driven by the worker holding its lease. Every state write may
carry a `Fence` (owner id + lease epoch); a fenced write fails with `LeaseLostError` once
another worker has taken the execution over, so a paused or partitioned worker can never
overwrite its successor's state.
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
)
from strategy_worker.domain.risk.state import TradingState as TradingState
from strategy_worker.errors import StoreError

JsonObject = Mapping[str, Any]
"""A JSON object; Decimals inside are written as strings and JSON numbers read as Decimal."""

FIRST_LEASE_EPOCH = 1
"""The lease epoch of an execution created with an owner (`Store.create_execution`)."""


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
class ExecutionDraft:
    """One execution of a batch to create, with its first intents (see create_executions)."""

    execution: NewExecution
    intents: Sequence[OrderIntent] = ()
    next_intent_seq: int | None = None


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
    owner_id: str | None
    lease_epoch: int
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime

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
    """A fill as recorded, with the report sequence that carried it (None if reconciled)."""

    fill: Fill
    oms_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StateWrite:
    """A fenced execution state update to apply together with other writes."""

    execution_id: uuid.UUID
    state: ExecutionState
    fence: Fence | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportsOutcome:
    """What `Store.record_order_reports` actually changed."""

    new_fill_ids: frozenset[str]
    """Fills not recorded before (replays are left out): only these move positions."""
    applied_updates: frozenset[str]
    """Client order ids whose update was applied (stale ones are left out)."""


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


class Store(Protocol):
    """Durable state of the worker. Every method is one transaction; errors are StoreError
    (`retryable` set for connection loss, timeouts, serialization failures)."""

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
        """Create the execution (and its first intents) once per approved message.

        True when created; False when it already existed (a redelivered message), in which
        case nothing is written. With `owner_id` the creator holds the lease at epoch
        FIRST_LEASE_EPOCH for `lease_seconds`. `next_intent_seq` defaults to one past the
        last intent.
        """
        ...

    async def create_executions(
        self,
        drafts: Sequence[ExecutionDraft],
        *,
        owner_id: str | None = None,
        lease_seconds: float = 0.0,
    ) -> set[uuid.UUID]:
        """`create_execution` for a batch in one transaction (one commit for a whole Kafka
        poll); returns the ids it created (the others already existed: nothing written)."""
        ...

    async def existing_executions(self, execution_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these executions exist (one query for a batch of redelivered messages)."""
        ...

    async def get_execution(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        """The execution, or None."""
        ...

    async def list_executions_by_status(
        self,
        statuses: Collection[ExecutionStatus],
        *,
        owner_id: str | None = None,
        limit: int | None = None,
    ) -> list[ExecutionRecord]:
        """Executions in any of `statuses` (optionally only those `owner_id` holds),
        oldest first."""
        ...

    async def update_execution_state(
        self, execution_id: uuid.UUID, state: ExecutionState, *, fence: Fence | None
    ) -> None:
        """Replace the execution's mutable state; LeaseLostError if the fence no longer holds."""
        ...

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
        """Record order intents and advance the execution in one transaction.

        Returns the client order ids that were new; an already recorded identical intent is
        skipped (a retried call), a different one raises IntentConflictError.
        """
        ...

    async def get_orders(self, execution_id: uuid.UUID) -> list[OrderRecord]:
        """Every order of an execution by intent_seq."""
        ...

    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        """One order by client order id, or None."""
        ...

    async def list_open_orders(
        self, *, execution_id: uuid.UUID | None = None, owner_id: str | None = None
    ) -> list[OrderRecord]:
        """Orders not yet FILLED/CANCELLED/REJECTED of one execution, or of every execution
        `owner_id` holds, or of all executions when both are None."""
        ...

    async def update_execution_states(self, writes: Sequence[StateWrite]) -> set[uuid.UUID]:
        """`update_execution_state` for a batch in one statement; returns the ids whose
        fence did not hold (or that do not exist): nothing was written for those."""
        ...

    async def record_order_reports(
        self,
        *,
        updates: Sequence[OrderUpdate] = (),
        fills: Sequence[FillRecord] = (),
        states: Sequence[StateWrite] = (),
        cursor: tuple[str, int] | None = None,
    ) -> ReportsOutcome:
        """Apply order updates, record fills (idempotent on fill_id), write execution states
        and advance a report cursor, all in one transaction: all or nothing."""
        ...

    async def get_fills(self, execution_id: uuid.UUID) -> list[FillRecord]:
        """Every recorded fill of an execution, in the order they happened."""
        ...

    # --- history ----------------------------------------------------------------------
    async def insert_snapshots(self, snapshots: Sequence[SnapshotRecord]) -> None:
        """Insert position snapshots in one batch; a repeated snapshot_id is ignored."""
        ...

    async def insert_risk_events(self, events: Sequence[RiskEventRecord]) -> None:
        """Insert risk events in one batch; a repeated event_id is ignored."""
        ...

    async def get_snapshots(
        self, execution_id: uuid.UUID, *, limit: int = 100
    ) -> list[SnapshotRecord]:
        """The latest snapshots of an execution, newest first."""
        ...

    async def get_risk_events(self, execution_id: uuid.UUID) -> list[RiskEventRecord]:
        """Every risk event of an execution, oldest first."""
        ...

    # --- leases -----------------------------------------------------------------------
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
        """Record what became of a request (so a replay after a crash knows it was done)."""
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

    # --- lifecycle ----------------------------------------------------------------------
    async def ping(self) -> bool:
        """True when the database answers (readiness)."""
        ...

    async def close(self) -> None:
        """Close the pool; idempotent."""
        ...
