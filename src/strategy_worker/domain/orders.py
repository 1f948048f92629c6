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


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """MARKET and LIMIT today; STOP_LIMIT and TRAILING_STOP are reserved names."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


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

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One execution report of a trade: `fill_id` is unique per OMS and per order."""

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
