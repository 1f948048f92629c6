"""The life of one order: an explicit transition table, partial fills, late fills, fees.

Reports come from outside (the OMS), so `OrderState` never raises on them: every report
yields an `OrderUpdate` saying whether it was applied, a duplicate, stale, or an anomaly.
Only the worker's own illegal moves (`transition`) raise `DomainError`.

Decisions (see README.md, "Trading rules", "Orders"):
- a cancel *request* is not a status: the order stays live and fills keep applying;
- a fill after CANCELLED is real money: it is applied (CANCELLED -> FILLED if it completes
  the order, else the order stays CANCELLED with the extra filled quantity);
- a fill whose `fill_id` was already applied to this order is ignored (DUPLICATE); the same
  id with different content is an anomaly (fill ids are unique per order, not globally);
- a fill that would take the filled quantity above the order quantity is NOT applied
  (OVERFILL anomaly with a CRITICAL risk event): the runtime must reconcile with the OMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.domain.money import ZERO, quantize_price
from strategy_worker.domain.orders import ExecutionReport, Fill, OmsOrder, OrderIntent, OrderStatus
from strategy_worker.errors import DomainError

S = OrderStatus

#: Allowed status moves. Fills move to PARTIALLY_FILLED/FILLED from any live status, and
#: from PENDING too, because an OMS may report a fill before (or without) its ack.
TRANSITIONS: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    S.PENDING: frozenset({S.ACCEPTED, S.REJECTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    # A fill that happened before the cancel landed, reported after it.
    S.CANCELLED: frozenset({S.FILLED}),
    S.FILLED: frozenset(),
    S.REJECTED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """True when the table allows `current -> target`."""
    return target in TRANSITIONS[current]


class UpdateOutcome(StrEnum):
    APPLIED = "APPLIED"
    DUPLICATE = "DUPLICATE"  # same status or same fill_id again: ignored, idempotent
    STALE = "STALE"  # a status the order has already moved past (e.g. ACCEPTED after FILLED)
    ANOMALY = "ANOMALY"  # contradicts what we know (overfill, wrong symbol/side): not applied


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderUpdate:
    """What one report did. `fill` is set only when a new fill was applied: feed it to the
    portfolio exactly once."""

    outcome: UpdateOutcome
    status: OrderStatus
    fill: Fill | None = None
    message: str = ""
    risk_event: RiskEvent | None = None

    @property
    def applied(self) -> bool:
        return self.outcome is UpdateOutcome.APPLIED


class OrderState:
    """Mutable state of one order, owned by its execution; exact fill accounting."""

    __slots__ = (
        "_fill_ids",
        "cancel_requested",
        "fees",
        "fill_notional",
        "filled_quantity",
        "intent",
        "oms_order_id",
        "reason",
        "status",
    )

    def __init__(self, intent: OrderIntent) -> None:
        self.intent = intent
        self.status = OrderStatus.PENDING
        self.filled_quantity = ZERO
        #: Exact sum of fill quantity x price; the average price is derived from it.
        self.fill_notional = ZERO
        self.fees = ZERO
        self.cancel_requested = False
        self.oms_order_id = ""
        self.reason = ""
        self._fill_ids: dict[str, Fill] = {}

    def clone(self) -> OrderState:
        """An independent copy for a step that may not be committed."""
        twin = OrderState.__new__(OrderState)
        for name in OrderState.__slots__:
            setattr(twin, name, getattr(self, name))
        twin._fill_ids = dict(self._fill_ids)
        return twin

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    @property
    def remaining_quantity(self) -> Decimal:
        return max(self.intent.quantity - self.filled_quantity, ZERO)

    @property
    def avg_fill_price(self) -> Decimal:
        """Fill-weighted average price, rounded to PRICE_QUANTUM half-even (0 before a fill)."""
        if not self.filled_quantity:
            return ZERO
        return quantize_price(self.fill_notional / self.filled_quantity)

    @property
    def is_live(self) -> bool:
        """Can still fill through normal flow (not terminal)."""
        return not self.status.is_terminal

    def transition(self, target: OrderStatus) -> None:
        """The worker's own move (e.g. mark REJECTED locally); raises on an illegal one."""
        if not can_transition(self.status, target):
            raise DomainError(
                f"order {self.client_order_id}: {self.status} -> {target} is not allowed"
            )
        self.status = target

    def request_cancel(self) -> bool:
        """Note that a cancel was requested; False when the order is already terminal."""
        if self.status.is_terminal:
            return False
        self.cancel_requested = True
        return True

    # ------------------------------------------------------------------ reports from the OMS

    def on_accepted(self, oms_order_id: str = "") -> OrderUpdate:
        if oms_order_id:
            self.oms_order_id = oms_order_id
        return self._move(OrderStatus.ACCEPTED)

    def on_rejected(self, reason: str = "") -> OrderUpdate:
        update = self._move(OrderStatus.REJECTED)
        if update.applied:
            self.reason = reason
        return update

    def on_cancelled(self, reason: str = "") -> OrderUpdate:
        update = self._move(OrderStatus.CANCELLED)
        if update.applied:
            self.reason = reason
        return update

    def on_fill(self, fill: Fill) -> OrderUpdate:
        """Apply one fill exactly once; see the module docstring for late fills and overfills."""
        seen = self._fill_ids.get(fill.fill_id)
        if seen is not None:
            if seen == fill:
                return OrderUpdate(outcome=UpdateOutcome.DUPLICATE, status=self.status)
            # Fill ids are unique per order (the OMS contract): the same id with other
            # content is not a repeat, and dropping it silently could lose real money.
            return self._anomaly(f"fill id {fill.fill_id} reused with different content", fill)
        problem = self._fill_problem(fill)
        if problem:
            return self._anomaly(problem, fill)
        if self.status in (OrderStatus.REJECTED, OrderStatus.FILLED):
            return self._anomaly(f"fill after {self.status}", fill)
        self._fill_ids[fill.fill_id] = fill
        self.filled_quantity += fill.quantity
        self.fill_notional += fill.quantity * fill.price
        self.fees += fill.fee
        complete = self.filled_quantity == self.intent.quantity
        if complete:
            self.status = OrderStatus.FILLED
        elif self.status is not OrderStatus.CANCELLED:
            self.status = OrderStatus.PARTIALLY_FILLED
        return OrderUpdate(outcome=UpdateOutcome.APPLIED, status=self.status, fill=fill)

    def apply_report(self, report: ExecutionReport) -> OrderUpdate:
        """Dispatch an OMS execution report to the matching handler."""
        if report.oms_order_id and not self.oms_order_id:
            self.oms_order_id = report.oms_order_id
        if report.fill is not None:
            return self.on_fill(report.fill)
        status = report.status
        if status is OrderStatus.ACCEPTED:
            return self.on_accepted(report.oms_order_id)
        if status is OrderStatus.REJECTED:
            return self.on_rejected(report.reason)
        if status is OrderStatus.CANCELLED:
            return self.on_cancelled(report.reason)
        if status is OrderStatus.PENDING:
            return OrderUpdate(outcome=UpdateOutcome.STALE, status=self.status)
        # A FILLED/PARTIALLY_FILLED status without its fill carries nothing to apply.
        return OrderUpdate(
            outcome=UpdateOutcome.STALE,
            status=self.status,
            message=f"{status} report without a fill",
        )

    def apply_view(self, view: OmsOrder) -> list[OrderUpdate]:
        """The OMS's whole view of the order (a submit answer, a reconciliation): its ack,
        every fill not applied yet (by fill id), then a terminal status without a fill.
        The same entry point as the report stream, one report at a time."""
        updates: list[OrderUpdate] = []
        if view.oms_order_id and not self.oms_order_id:
            self.oms_order_id = view.oms_order_id
        if view.oms_order_id and self.status is OrderStatus.PENDING:
            updates.append(self.on_accepted(view.oms_order_id))
        updates.extend(self.on_fill(fill) for fill in view.fills)
        if view.status is OrderStatus.REJECTED:
            updates.append(self.on_rejected(view.reason))
        elif view.status is OrderStatus.CANCELLED:
            updates.append(self.on_cancelled(view.reason))
        return updates

    def snapshot(self) -> dict[str, object]:
        """Column values of `execution_orders` this state owns."""
        return {
            "status": self.status.value,
            "filled_quantity": self.filled_quantity,
            "filled_price": self.avg_fill_price,
            "fees": self.fees,
            "oms_order_id": self.oms_order_id,
            "cancel_requested": self.cancel_requested,
            "reason": self.reason,
        }

    # ---------------------------------------------------------------------------- helpers

    def _move(self, target: OrderStatus) -> OrderUpdate:
        if self.status is target:
            return OrderUpdate(outcome=UpdateOutcome.DUPLICATE, status=self.status)
        if not can_transition(self.status, target):
            return OrderUpdate(
                outcome=UpdateOutcome.STALE,
                status=self.status,
                message=f"{target} ignored: order is already {self.status}",
            )
        if target is OrderStatus.REJECTED and self.filled_quantity:
            return self._anomaly("REJECTED after fills", None)
        self.status = target
        return OrderUpdate(outcome=UpdateOutcome.APPLIED, status=target)

    def _fill_problem(self, fill: Fill) -> str:
        intent = self.intent
        if fill.symbol != intent.symbol or fill.side is not intent.side:
            return (
                f"fill {fill.symbol} {fill.side} does not match order {intent.symbol} {intent.side}"
            )
        if fill.quantity <= 0 or fill.price <= 0 or fill.fee < 0:
            return "fill quantity and price must be positive and the fee non-negative"
        if self.filled_quantity + fill.quantity > intent.quantity:
            return f"overfill: {self.filled_quantity} + {fill.quantity} > ordered {intent.quantity}"
        return ""

    def _anomaly(self, problem: str, fill: Fill | None) -> OrderUpdate:
        event = RiskEvent(
            event_type=RiskEventType.ORDER_ANOMALY,
            severity=Severity.CRITICAL,
            description=f"order {self.client_order_id}: {problem}",
            action_taken="report not applied; reconcile the execution with the OMS",
            symbol=self.intent.symbol,
            details=details(
                client_order_id=self.client_order_id,
                fill_id=fill.fill_id if fill else "",
                status=self.status,
            ),
        )
        return OrderUpdate(
            outcome=UpdateOutcome.ANOMALY, status=self.status, message=problem, risk_event=event
        )
