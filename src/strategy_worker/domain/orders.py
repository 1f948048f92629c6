"""Order vocabulary shared by every room: sides, types, statuses, intents and fills.

The order state machine (transition table, partial fills, late fills after a cancel)
lives in `order_state.py`; this module holds only the values other rooms exchange.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from strategy_worker.errors import DomainError


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """What the OMS does with an order. The three resting stops exist since contract 1.1.

    STOP works as MARKET once the price reaches `stop_price`, STOP_LIMIT as LIMIT at
    `limit_price`, TRAILING_STOP follows the price (`Trail`) and works as MARKET (or LIMIT
    at its level minus `Trail.limit_offset`) once the price comes back to its level.
    """

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"
    TRAILING_STOP = "TRAILING_STOP"

    @property
    def is_resting_stop(self) -> bool:
        """Rests untriggered until the price reaches its level (STOP, STOP_LIMIT, TRAILING)."""
        return self in _STOPS


_STOPS = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP})


class OrderStatus(StrEnum):
    """Statuses of the spec's `execution_orders.status`, plus PARTIALLY_FILLED."""

    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})


class OrderPurpose(StrEnum):
    """Why an order exists; part of its audit trail and of risk decisions."""

    INITIAL = "INITIAL"
    REBALANCE = "REBALANCE"
    STOP_LOSS = "STOP_LOSS"
    CLOSE = "CLOSE"
    TAKE_PROFIT = "TAKE_PROFIT"
    TRAILING_STOP = "TRAILING_STOP"
    EXIT = "EXIT"
    """A strategy's own exit rule fired (docs/signals.md): the position is closed."""

    @property
    def is_protective(self) -> bool:
        """An exit the protection engine owns (stop-loss, take-profit, trailing stop)."""
        return self in _PROTECTIVE

    @property
    def is_closing(self) -> bool:
        """Risk-reducing by definition: a close, an exit signal's close or a protective exit
        (never throttled)."""
        return self in (OrderPurpose.CLOSE, OrderPurpose.EXIT) or self in _PROTECTIVE


_PROTECTIVE = frozenset(
    {OrderPurpose.STOP_LOSS, OrderPurpose.TAKE_PROFIT, OrderPurpose.TRAILING_STOP}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trail:
    """How a TRAILING_STOP's level follows the price: exactly one of `pct` and `amount`.

    A SELL trails its high-water mark (the highest mark since it was armed): level =
    mark x (1 - pct) or mark - amount, rounded to PRICE_QUANTUM half-even; a BUY mirrors it
    below. `limit_offset` None means MARKET on trigger, else LIMIT at level -/+ offset.
    `reference_price` is the mark to trail from (a re-armed trail continues where it was).
    """

    pct: Decimal | None = None
    amount: Decimal | None = None
    limit_offset: Decimal | None = None
    reference_price: Decimal | None = None

    def __post_init__(self) -> None:
        if (self.pct is None) == (self.amount is None):
            raise DomainError("a trail takes exactly one of pct and amount")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderIntent:
    """An order the worker has decided to send; recorded durably before the OMS hears of it.

    `price` is the reference price used for sizing and risk (the limit price for LIMIT).
    """

    client_order_id: str
    execution_id: uuid.UUID
    intent_seq: int
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    price: Decimal
    purpose: OrderPurpose
    limit_price: Decimal | None = None
    #: STOP / STOP_LIMIT trigger level (contract 1.1); None for every other type.
    stop_price: Decimal | None = None
    #: TRAILING_STOP only.
    trail: Trail | None = None
    #: A bracket child: fills at most what this parent order has filled.
    parent_client_order_id: str = ""
    #: Members of one OCO group share one quantity (a fill of one reduces the others).
    oco_group_id: str = ""
    #: Never fills beyond the execution's position (the OMS caps it).
    reduce_only: bool = False

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One execution report of a trade: `fill_id` is unique across the OMS (every order of
    every execution), which is what lets it be the primary key of `execution_fills`."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    filled_at: datetime

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionReport:
    """What the OMS says happened to an order: an ack, a fill, a reject or a cancel.

    `seq` is the OMS's global, gap-free report sequence, used to resume a report stream.
    `fill` is set only for fill reports; `reason` only for rejects and cancels.
    """

    seq: int
    client_order_id: str
    oms_order_id: str
    execution_id: uuid.UUID
    status: OrderStatus
    filled_quantity: Decimal
    avg_fill_price: Decimal
    fill: Fill | None = None
    reason: str = ""
    #: Contract 1.1: the order's trigger was reached (a resting stop now works).
    triggered: bool = False
    #: Contract 1.1: the trigger level after this report (a trailing stop's moves).
    stop_price: Decimal | None = None
    #: Contract 1.1: what the order may still fill (a bracket child: its parent's fills).
    active_quantity: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OmsOrder:
    """The OMS's view of one order, used for idempotent resubmission and reconciliation."""

    client_order_id: str
    oms_order_id: str
    execution_id: uuid.UUID
    account_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    status: OrderStatus
    filled_quantity: Decimal
    avg_fill_price: Decimal
    fills: tuple[Fill, ...]
    reason: str = ""
    stop_price: Decimal | None = None
    trail: Trail | None = None
    parent_client_order_id: str = ""
    oco_group_id: str = ""
    reduce_only: bool = False
    #: What it may still fill now (None from a 1.0 OMS: quantity - filled).
    active_quantity: Decimal | None = None
    triggered: bool = False
    #: TRAILING_STOP: the best price trailed so far.
    watermark: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OmsCapabilities:
    """What an OMS holds natively (GetCapabilities); everything else the worker emulates.

    `baseline()` is a contract 1.0 OMS (MARKET and LIMIT, nothing contingent): what the
    client assumes when the OMS does not serve GetCapabilities.
    """

    order_types: frozenset[OrderType]
    oco_groups: bool = False
    brackets: bool = False
    reduce_only: bool = False
    order_groups: bool = False
    contract_version: str = "1.0"
    #: Contract 1.2: SubmitOrders takes OrderBatch requests of up to `max_batch_orders`
    #: orders, `max_batches_in_flight` of them unanswered per stream at most.
    order_batches: bool = False
    max_batch_orders: int = 0
    max_batches_in_flight: int = 0
    #: Contract 1.2: StreamExecutionReportBatches is served.
    report_batches: bool = False

    @classmethod
    def baseline(cls) -> OmsCapabilities:
        return cls(order_types=frozenset({OrderType.MARKET, OrderType.LIMIT}))

    def supports(self, order_type: OrderType) -> bool:
        return order_type in self.order_types
