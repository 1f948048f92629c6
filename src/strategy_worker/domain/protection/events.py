"""What the protection engine tells the runtime: past-tense events, each with its RiskEvent.

As everywhere in the domain, the runtime persists `event.risk_event` (risk_events) and may
publish the event itself; nothing here is an instruction (those are the step's intents and
cancels, see `book.ProtectionStep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.domain.orders import OrderType
from strategy_worker.domain.protection.rules import Leg

_TRIGGER_EVENT = {
    Leg.STOP_LOSS: (RiskEventType.STOP_LOSS_TRIGGERED, Severity.CRITICAL),
    Leg.TRAILING_STOP: (RiskEventType.TRAILING_STOP_TRIGGERED, Severity.WARNING),
    Leg.TAKE_PROFIT: (RiskEventType.TAKE_PROFIT_TRIGGERED, Severity.INFO),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionTriggered:
    """A leg's trigger was reached (by the worker's mark, or reported by the OMS): the
    position is to be exited entirely; every other leg of it is disarmed (OCO)."""

    symbol: str
    leg: Leg
    level: Decimal
    mark: Decimal
    gap: bool
    by_oms: bool
    at: datetime
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionExitReleased:
    """The worker released an emulated exit (an intent of the same step)."""

    symbol: str
    leg: Leg
    client_order_id: str
    order_type: OrderType
    quantity: Decimal
    reference_price: Decimal
    attempt: int
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionPlaced:
    """Native legs were placed at the OMS as one OCO group (intents of the same step)."""

    symbol: str
    group_id: str
    legs: tuple[Leg, ...]
    quantity: Decimal
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionFallback:
    """Native placement was wanted but is not possible; the worker emulates instead."""

    symbol: str
    reason: str
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionOverdue:
    """A native leg did not execute within the grace after the worker's marks crossed its
    level: the worker cancels the native legs and exits itself once they are terminal."""

    symbol: str
    leg: Leg
    waited_s: float
    risk_event: RiskEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionExitFailed:
    """An exit ended without selling what it had to (rejected, cancelled); another is
    released for what is still held once `retry_at` is reached."""

    symbol: str
    client_order_id: str
    reason: str
    retry_at: datetime
    risk_event: RiskEvent


ProtectionEvent = (
    ProtectionTriggered
    | ProtectionExitReleased
    | ProtectionPlaced
    | ProtectionFallback
    | ProtectionOverdue
    | ProtectionExitFailed
)


def triggered(
    symbol: str,
    leg: Leg,
    *,
    level: Decimal,
    mark: Decimal,
    gap: bool,
    by_oms: bool,
    at: datetime,
) -> ProtectionTriggered:
    kind, severity = _TRIGGER_EVENT[leg]
    where = "reported by the OMS" if by_oms else f"mark {mark}"
    how = "gapped past" if gap else "reached"
    return ProtectionTriggered(
        symbol=symbol,
        leg=leg,
        level=level,
        mark=mark,
        gap=gap,
        by_oms=by_oms,
        at=at,
        risk_event=RiskEvent(
            event_type=kind,
            severity=severity,
            description=f"{symbol} {leg} level {level} {how} ({where})",
            action_taken="exit the whole position; other legs disarmed",
            symbol=symbol,
            details=details(leg=leg.value, level=level, mark=mark, gap=gap, by_oms=by_oms),
        ),
    )


def exit_released(
    symbol: str,
    leg: Leg,
    *,
    client_order_id: str,
    order_type: OrderType,
    quantity: Decimal,
    reference_price: Decimal,
    attempt: int,
) -> ProtectionExitReleased:
    return ProtectionExitReleased(
        symbol=symbol,
        leg=leg,
        client_order_id=client_order_id,
        order_type=order_type,
        quantity=quantity,
        reference_price=reference_price,
        attempt=attempt,
        risk_event=RiskEvent(
            event_type=RiskEventType.PROTECTION_EXIT_RELEASED,
            severity=Severity.WARNING,
            description=f"{symbol} {leg} exit: {order_type} sell of {quantity}",
            action_taken=f"order {client_order_id} (attempt {attempt})",
            symbol=symbol,
            details=details(
                leg=leg.value,
                client_order_id=client_order_id,
                order_type=order_type.value,
                quantity=quantity,
                reference_price=reference_price,
                attempt=attempt,
            ),
        ),
    )


def placed(
    symbol: str, *, group_id: str, legs: tuple[Leg, ...], quantity: Decimal
) -> ProtectionPlaced:
    names = ", ".join(leg.value for leg in legs)
    return ProtectionPlaced(
        symbol=symbol,
        group_id=group_id,
        legs=legs,
        quantity=quantity,
        risk_event=RiskEvent(
            event_type=RiskEventType.PROTECTION_PLACED,
            severity=Severity.INFO,
            description=f"{symbol}: {names} resting at the OMS for {quantity}",
            action_taken=f"OCO group {group_id}",
            symbol=symbol,
            details=details(group_id=group_id, legs=names, quantity=quantity),
        ),
    )


def fallback(symbol: str, reason: str) -> ProtectionFallback:
    return ProtectionFallback(
        symbol=symbol,
        reason=reason,
        risk_event=RiskEvent(
            event_type=RiskEventType.PROTECTION_FALLBACK,
            severity=Severity.WARNING,
            description=f"{symbol}: protection not native: {reason}",
            action_taken="emulated by the worker",
            symbol=symbol,
            details=details(reason=reason),
        ),
    )


def overdue(symbol: str, leg: Leg, waited_s: float) -> ProtectionOverdue:
    return ProtectionOverdue(
        symbol=symbol,
        leg=leg,
        waited_s=waited_s,
        risk_event=RiskEvent(
            event_type=RiskEventType.PROTECTION_OVERDUE,
            severity=Severity.CRITICAL,
            description=f"{symbol}: native {leg} not executed {waited_s:.1f} s after its level",
            action_taken="cancelling the native legs; the worker exits once they are done",
            symbol=symbol,
            details=details(leg=leg.value, waited_s=f"{waited_s:.3f}"),
        ),
    )


def exit_failed(
    symbol: str, client_order_id: str, reason: str, retry_at: datetime
) -> ProtectionExitFailed:
    return ProtectionExitFailed(
        symbol=symbol,
        client_order_id=client_order_id,
        reason=reason,
        retry_at=retry_at,
        risk_event=RiskEvent(
            event_type=RiskEventType.PROTECTION_EXIT_FAILED,
            severity=Severity.CRITICAL,
            description=f"{symbol}: exit {client_order_id} ended unfilled ({reason})",
            action_taken=f"another exit at or after {retry_at.isoformat()}",
            symbol=symbol,
            details=details(client_order_id=client_order_id, reason=reason, retry_at=retry_at),
        ),
    )
