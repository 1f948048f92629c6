"""Facts the domain emits: `RiskEvent` rows for the `risk_events` table and past-tense events.

Every domain event carries the `RiskEvent` that records it, so the runtime persists one shape
(`event.risk_event.to_row()`) and publishes the event itself on `strategy.execution`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Severity(StrEnum):
    """`risk_events.severity`."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class RiskEventType(StrEnum):
    """Stable `risk_events.event_type` values."""

    ORDER_DENIED = "ORDER_DENIED"
    ORDER_RESIZED = "ORDER_RESIZED"
    POSITION_LIMIT_WARNING = "POSITION_LIMIT_WARNING"
    ALLOCATION_CAPPED = "ALLOCATION_CAPPED"
    ALLOCATION_SCALED = "ALLOCATION_SCALED"
    ORDER_SPLIT = "ORDER_SPLIT"
    DUST_SKIPPED = "DUST_SKIPPED"
    PRICE_MISSING = "PRICE_MISSING"
    PRICE_ABOVE_MAX_ORDER = "PRICE_ABOVE_MAX_ORDER"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    REBALANCE_TRIGGERED = "REBALANCE_TRIGGERED"
    REENTRY_BLOCKED = "REENTRY_BLOCKED"
    DAILY_LOSS_LIMIT_REACHED = "DAILY_LOSS_LIMIT_REACHED"
    TRADING_STATE_CHANGED = "TRADING_STATE_CHANGED"
    STOP_LOSS_WARNING = "STOP_LOSS_WARNING"
    STOP_LOSS_TRIGGERED = "STOP_LOSS_TRIGGERED"
    STOP_LOSS_REARMED = "STOP_LOSS_REARMED"
    ORDER_ANOMALY = "ORDER_ANOMALY"
    ORDER_DEFERRED = "ORDER_DEFERRED"
    EXECUTION_FAULT = "EXECUTION_FAULT"
    STOP_INCOMPLETE = "STOP_INCOMPLETE"
    UNAUTHORIZED_CONTROL = "UNAUTHORIZED_CONTROL"
    LEDGER_REPAIRED = "LEDGER_REPAIRED"
    RULES_UNREADABLE = "RULES_UNREADABLE"
    """A stored execution's entry/exit rules no longer parse (docs/signals.md)."""
    # Protective orders (domain/protection): a leg's trigger, and how its exit left.
    TAKE_PROFIT_TRIGGERED = "TAKE_PROFIT_TRIGGERED"
    TRAILING_STOP_TRIGGERED = "TRAILING_STOP_TRIGGERED"
    PROTECTION_EXIT_RELEASED = "PROTECTION_EXIT_RELEASED"
    PROTECTION_PLACED = "PROTECTION_PLACED"
    PROTECTION_FALLBACK = "PROTECTION_FALLBACK"
    PROTECTION_OVERDUE = "PROTECTION_OVERDUE"
    PROTECTION_EXIT_FAILED = "PROTECTION_EXIT_FAILED"


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskEvent:
    """One row of `risk_events` (minus ids and timestamps, which the runtime adds)."""

    event_type: str
    severity: Severity
    description: str
    action_taken: str
    symbol: str | None = None
    #: Machine-readable facts; Decimals as strings so the row is JSON-safe.
    details: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def to_row(self) -> dict[str, Any]:
        """Column values for `risk_events` (details go to a JSONB column when there is one)."""
        return {
            "event_type": self.event_type,
            "severity": self.severity.value,
            "description": self.description,
            "action_taken": self.action_taken,
            "symbol": self.symbol,
            "details": dict(self.details),
        }


def details(**values: object) -> Mapping[str, str]:
    """Build a `RiskEvent.details` mapping; Decimals in plain (non-exponent) form."""
    out = {}
    for key, value in values.items():
        out[key] = format(value, "f") if isinstance(value, Decimal) else str(value)
    return MappingProxyType(out)


# ----------------------------------------------------------------- past-tense domain events


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDenied:
    """The risk manager refused an order; nothing was sent."""

    client_order_id: str
    symbol: str
    reason: str
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderResized:
    """The risk manager approved an order at a smaller quantity."""

    client_order_id: str
    symbol: str
    requested_quantity: Decimal
    approved_quantity: Decimal
    reason: str
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class TradingStateChanged:
    """An execution's trading state moved (ACTIVE / REDUCING / HALTED)."""

    execution_id: uuid.UUID
    previous: str
    current: str
    reason: str
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyLossLimitReached:
    """The day's loss reached its limit; the execution is HALTED until the next trading day."""

    execution_id: uuid.UUID
    day_start_equity: Decimal
    equity: Decimal
    loss_limit: Decimal
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class StopLossTriggered:
    """A mark reached its stop level; a STOP_LOSS order closes the position."""

    symbol: str
    mark: Decimal
    stop_level: Decimal
    quantity: Decimal
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class StopLossWarning:
    """A mark entered the buffer zone just above its stop level."""

    symbol: str
    mark: Decimal
    stop_level: Decimal
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class StopLossRearmed:
    """A stopped-out symbol recovered above its re-entry level; rebalancing may buy it again."""

    symbol: str
    mark: Decimal
    reentry_level: Decimal
    risk_event: RiskEvent


DomainEvent = (
    OrderDenied
    | OrderResized
    | TradingStateChanged
    | DailyLossLimitReached
    | StopLossTriggered
    | StopLossWarning
    | StopLossRearmed
)
