"""A step: one decision about one execution, made on a fork of its committed model.

A step performs no I/O. It records what it decided — new order intents, order updates,
fills, risk events, events, snapshots, control outcomes — and `write()` turns that into the
one `ExecutionWrite` the committer stores in a single transaction. Until that commit
succeeds the runner keeps its old model (`ExecutionRunner.adopt` takes the fork after).

Ids are deterministic: events and risk rows are numbered within the step's version, so a
step decided twice from the same state writes the same rows (and a replay is harmless).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from strategy_worker import messages as msg
from strategy_worker.domain.clock import Clock
from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.order_state import OrderState, OrderUpdate, UpdateOutcome
from strategy_worker.domain.orders import (
    ExecutionReport,
    OmsOrder,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.domain.positions import Portfolio, Valuation
from strategy_worker.domain.protection import ProtectionBook
from strategy_worker.domain.risk.manager import (
    RiskContext,
    RiskDecision,
    RiskManager,
    RiskReason,
    deny,
)
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.errors import DomainError
from strategy_worker.runtime import protection as protective
from strategy_worker.runtime.model import ExecutionModel
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.store import (
    ControlCompletion,
    ExecutionStatus,
    ExecutionWrite,
    FillRecord,
    NewExecution,
    OutboxEvent,
    ProtectionWrite,
    RiskEventRecord,
    SnapshotRecord,
)
from strategy_worker.store import OrderUpdate as StoredOrderUpdate

_CLOSING = frozenset(p for p in OrderPurpose if p.is_closing)


class ExposureView(Protocol):
    """The exposure every other execution holds (for the exposure limits)."""

    def others(self, execution_id: uuid.UUID) -> Decimal:
        """Long market value plus buys in flight of every execution but this one."""
        ...

    def user_others(self, user_id: uuid.UUID, execution_id: uuid.UUID) -> Decimal:
        """The same over the user's other executions."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """The narrow dependencies every step uses."""

    clock: Clock
    risk: RiskManager
    exposure: ExposureView
    price_max_age: float = 120.0
    """Seconds a mark stays current enough to size an order at it."""
    protection: protective.ProtectionDesk | None = None
    """What the OMS holds natively, for the protection books (None: baseline)."""


class Step:
    """A fork of one runner's model plus everything decided on it (see module docstring)."""

    def __init__(self, runner: ExecutionRunner, ctx: StepContext) -> None:
        self.runner = runner
        self.info = runner.info
        self.ctx = ctx
        self.model: ExecutionModel = runner.model.fork()
        self.version = runner.model.version + 1
        self.now: datetime = ctx.clock.now()
        self.intents: list[OrderIntent] = []
        self.changed: dict[str, OrderState] = {}
        self.fills: list[FillRecord] = []
        self.risk_rows: list[RiskEventRecord] = []
        self.events: list[Mapping[str, object]] = []
        self.snapshots: list[SnapshotRecord] = []
        self.controls: list[ControlCompletion] = []
        self.decisions: list[SignalDecision] = []
        """Rule evaluations to record with this step (runtime/signal_steps.py)."""
        self.cancels: list[str] = []
        """Client order ids to ask the OMS to cancel once this step is committed."""
        self.resend: list[OrderIntent] = []
        """Recorded orders the OMS never saw, re-checked by this step: sent after commit."""
        self.create: NewExecution | None = None
        """Set by intake: this step creates the execution."""
        self.published_at: float | None = None
        """Set by intake: when the approved message was published (latency metric)."""
        self.funded: Decimal = Decimal(1)
        self.requested: Decimal = ZERO
        """Set by intake: the fraction of the first orders the exposure capacity funds, of
        what they would take with the capacity unlimited."""
        self.release = False
        self.touched = False
        """Something of the model changed that must be written even without rows."""
        self.observed: list[ExecutionReport | OmsOrder] = []
        """What the OMS said in this step about the execution's orders (for the book)."""
        self._copied: set[str] = set()
        self._valuation: Valuation | None = None
        self._protection_copied = False
        self._protection_write: ProtectionWrite | None = None
        self._releasing = ZERO
        """Notional of the waiting buy being checked for release (see `risk_context`)."""

    # ------------------------------------------------------------------ reading

    @property
    def execution_id(self) -> uuid.UUID:
        return self.info.execution_id

    @property
    def timestamp(self) -> float:
        return self.now.timestamp()

    def valuation(self) -> Valuation:
        """The step's portfolio at the runner's known marks."""
        if self._valuation is None:
            self._valuation = self.model.portfolio.valuation(self.runner.marks)
        return self._valuation

    def fresh_marks(self) -> dict[str, Decimal]:
        return self.runner.fresh_marks(self.timestamp, self.ctx.price_max_age)

    def order(self, coid: str) -> OrderState | None:
        """The order, copied into this step before anything changes it."""
        state = self.model.orders.get(coid)
        if state is None or coid in self._copied:
            return state
        twin = state.clone()
        self.model.orders[coid] = twin
        self._copied.add(coid)
        return twin

    @property
    def protection(self) -> ProtectionBook | None:
        """The execution's protection book, copied into this step on first use (a fresh
        one when its limits configure protection and it has none yet)."""
        if not self._protection_copied:
            self._protection_copied = True
            desk = self.ctx.protection
            book = self.model.protection
            if book is not None:
                caps = desk.capabilities if desk is not None else None
                self.model.protection = book.clone(capabilities=caps)
            elif desk is not None:
                self.model.protection = desk.new_book(self.info)
        return self.model.protection

    @property
    def has_effects(self) -> bool:
        return bool(
            self.touched
            or self.intents
            or self.changed
            or self.risk_rows
            or self.events
            or self.snapshots
            or self.controls
            or self.decisions
            or self.release
            or self.create is not None
        )

    # ------------------------------------------------------------------ facts out

    def emit(self, event: Mapping[str, object], *, first: bool = False) -> None:
        """Queue an event for the outbox (`first`: ahead of the others, e.g. `started`)."""
        if first:
            self.events.insert(0, event)
        else:
            self.events.append(event)

    def risk(self, event: RiskEvent) -> None:
        """A risk event: a `risk_events` row and its `risk_event` message, both committed."""
        n = len(self.risk_rows)
        row = RiskEventRecord(
            event_id=uuid.uuid5(self.execution_id, f"risk:{self.version}:{n}"),
            execution_id=self.execution_id,
            event_type=str(event.event_type),
            severity=Severity(str(event.severity)),
            description=event.description,
            action_taken=event.action_taken,
            occurred_at=self.now,
            details=dict(event.details) | ({"symbol": event.symbol} if event.symbol else {}),
        )
        self.risk_rows.append(row)
        self.emit(
            msg.risk_event(
                self.runner.context,
                at=self.now,
                event_type=row.event_type,
                severity=row.severity.value,
                description=row.description,
                action_taken=row.action_taken,
                symbol=event.symbol,
                details=event.details,
            )
        )

    def drain_risk_state(self) -> None:
        """Turn the risk state's own changes (halts, state changes) into risk events."""
        for event in self.model.risk.take_events():
            risk_event = getattr(event, "risk_event", None)
            if isinstance(risk_event, RiskEvent):
                self.risk(risk_event)

    def anomaly(self, text: str) -> None:
        """Something we cannot explain: trade only to reduce risk until an operator looks."""
        self.model.risk.enter_reducing(text)
        self.drain_risk_state()

    def set_plans(self, **changes: object) -> None:
        self.model.plans = replace(self.model.plans, **changes)  # type: ignore[arg-type]
        self.touched = True

    # ------------------------------------------------------------------ the risk gate

    def risk_context(self, symbol: str, *, exclude: str | None = None) -> RiskContext:
        """What the pre-trade check needs, with this step's own new orders in flight.

        `exclude` leaves one recorded order out of the in-flight sums (re-checking it)."""
        model = self.model
        buy_value = buy_qty = sell_qty = ZERO
        legs = model.resting_legs().legs  # reduce-only at the OMS: see pending_sells
        for order in model.orders.values():
            if (
                not order.is_live
                or order.client_order_id == exclude
                or order.client_order_id in legs
            ):
                continue
            intent = order.intent
            remaining = order.remaining_quantity
            if intent.side is Side.BUY:
                buy_value += remaining * intent.price
                if intent.symbol == symbol:
                    buy_qty += remaining
            elif intent.symbol == symbol:
                sell_qty += remaining
        valuation = self.valuation()
        # Buys waiting for a token are reserved too; the one being released is re-checked
        # itself, so it is left out of its own reservation here.
        own = valuation.market_value + buy_value + model.deferred_buys() - self._releasing
        limits = self.info.limits
        in_flight = limits.reserved_buy_cost(buy_value) if buy_value else ZERO
        return RiskContext(
            execution=model.risk,
            equity=valuation.equity,
            # Buys in flight may still take their fees and slippage: reserve for them.
            cash=model.portfolio.cash - in_flight,
            position_quantity=model.portfolio.quantity(symbol),
            pending_buy_quantity=buy_qty,
            pending_sell_quantity=sell_qty,
            worker_exposure=self.ctx.exposure.others(self.execution_id) + own,
            user_exposure=self.ctx.exposure.user_others(self.info.user_id, self.execution_id) + own,
        )

    def release_checking(self, waiting: OrderIntent | None) -> None:
        """The waiting buy about to be checked for release (None when done): its own
        reservation must not count against it."""
        self._releasing = (
            waiting.quantity * waiting.price
            if waiting is not None and waiting.side is Side.BUY
            else ZERO
        )

    def check(self, intent: OrderIntent, *, exclude: str | None = None) -> RiskDecision:
        """One pre-trade check. Its events become risk events of this step, except a bare
        rate-limit denial: the order waits for a token, which is not a risk event."""
        decision = self._status_denial(intent) or self.ctx.risk.check(
            intent, self.risk_context(intent.symbol, exclude=exclude)
        )
        if decision.approved or decision.reason is not RiskReason.RATE_LIMITED:
            for event in decision.events:
                self.risk(event)
        return decision

    def _status_denial(self, intent: OrderIntent) -> RiskDecision | None:
        """No new entry while the execution is paused or stopping (sells still pass)."""
        if intent.side is not Side.BUY:
            return None
        model = self.model
        if model.plans.stop is not None or not model.running:
            return deny(intent, RiskReason.EXECUTION_STOPPING, "the execution is stopping")
        if model.status is ExecutionStatus.PAUSED:
            return deny(intent, RiskReason.EXECUTION_PAUSED, "the execution is paused")
        return None

    def gate(
        self, intents: Iterable[OrderIntent], *, defer_rate_limited: bool = True
    ) -> list[RiskDecision]:
        """Check a batch in order and record what passes (see `add`); each check sees the
        ones approved before it as in flight. A denial is an `order_rejected` event; an
        order denied only for want of a rate token waits in the plans and is sent, checked
        again, when a token is there (never dropped). Returns the denials (deferred orders
        are not denied)."""
        deferred: list[OrderIntent] = []
        denials: list[RiskDecision] = []
        for intent in intents:
            decision = self.check(intent)
            if decision.approved:
                qty = decision.quantity_for(intent)
                self.add([intent if qty == intent.quantity else replace(intent, quantity=qty)])
            elif decision.reason is RiskReason.RATE_LIMITED and defer_rate_limited:
                deferred.append(intent)
            else:
                if decision.reason is RiskReason.RATE_LIMITED:
                    for event in decision.events:
                        self.risk(event)
                self.denied(intent, decision)
                denials.append(decision)
        if deferred:
            self.risk(
                RiskEvent(
                    event_type=RiskEventType.ORDER_DEFERRED,
                    severity=Severity.INFO,
                    description=f"{len(deferred)} order(s) wait for the submit rate limit",
                    action_taken="sent, checked again, as soon as a rate token is free",
                    details=details(orders=len(deferred)),
                )
            )
            self.set_plans(deferred=(*self.model.plans.deferred, *deferred))
        return denials

    def denied(
        self, intent: OrderIntent, decision: RiskDecision, *, coid: str | None = None
    ) -> None:
        reason = decision.reason.value if decision.reason else "DENIED"
        text = decision.events[0].description if decision.events else reason
        self.emit(
            msg.order_rejected(
                self.runner.context,
                at=self.now,
                order=intent,
                client_order_id=coid,
                source="risk",
                reason_code=reason,
                reason=text,
            )
        )

    def add(self, intents: Sequence[OrderIntent]) -> list[OrderIntent]:
        """Number approved intents from next_seq (consecutive client order ids) and record
        them as live orders of this step: they are written before the OMS hears of them.
        Sells are reduce-only where the OMS honours it: a protective leg resting there may
        fill on the OMS's own prices at any moment, and a close racing it must not sell
        what that leg already sold."""
        desk = self.ctx.protection
        reduce_only = desk is not None and desk.capabilities.reduce_only
        out: list[OrderIntent] = []
        for intent in intents:
            seq = self.model.next_seq
            self.model.next_seq += 1
            numbered = replace(
                intent,
                intent_seq=seq,
                client_order_id=client_order_id(self.execution_id, seq),
                reduce_only=intent.reduce_only or (reduce_only and intent.side is Side.SELL),
            )
            self.model.orders[numbered.client_order_id] = OrderState(numbered)
            self._copied.add(numbered.client_order_id)
            out.append(numbered)
        self.intents.extend(out)
        return out

    def add_numbered(self, intents: Sequence[OrderIntent]) -> None:
        """Record intents numbered by their decider from next_seq on (the protection
        book's), as live orders of this step, unchanged: written before they are sent."""
        for intent in intents:
            if intent.intent_seq != self.model.next_seq:
                raise DomainError(
                    f"intent {intent.client_order_id} is numbered {intent.intent_seq}, "
                    f"the next is {self.model.next_seq}"
                )
            self.model.next_seq += 1
            self.model.orders[intent.client_order_id] = OrderState(intent)
            self._copied.add(intent.client_order_id)
        self.intents.extend(intents)

    # ------------------------------------------------------------------ reports in

    def apply_reports(self, reports: Iterable[ExecutionReport]) -> None:
        """Execution reports from the OMS stream, through the order state machine."""
        for report in reports:
            order = self.order(report.client_order_id)
            if order is not None:
                self.observed.append(report)
                before = self._before(order)
                self._applied(order, before, [order.apply_report(report)])

    def apply_views(self, views: Iterable[OmsOrder]) -> None:
        """The OMS's view of orders (submit answers, reconciliation)."""
        for view in views:
            order = self.order(view.client_order_id)
            if order is not None:
                self.observed.append(view)
                before = self._before(order)
                self._applied(order, before, order.apply_view(view))

    @staticmethod
    def _before(order: OrderState) -> tuple[object, ...]:
        return (order.status, order.filled_quantity, order.oms_order_id, order.reason)

    def _applied(
        self, order: OrderState, before: tuple[object, ...], updates: list[OrderUpdate]
    ) -> None:
        """Events and bookings of what the order state machine just did to `order`."""
        was_pending = before[0] is OrderStatus.PENDING and not before[2]
        if (
            was_pending
            and (order.oms_order_id or order.status is not OrderStatus.PENDING)
            and order.status is not OrderStatus.REJECTED
        ):
            self.emit(
                msg.order_submitted(
                    self.runner.context,
                    at=self.now,
                    intent=order.intent,
                    oms_order_id=order.oms_order_id or None,
                )
            )
        for update in updates:
            self._update(order, update)
        if self._before(order) != before:
            self.changed[order.client_order_id] = order

    def _update(self, order: OrderState, update: OrderUpdate) -> None:
        if update.risk_event is not None:
            self.risk(update.risk_event)
            if update.outcome is UpdateOutcome.ANOMALY:
                self.anomaly(update.risk_event.description)
        if update.fill is not None:
            try:
                self.model.portfolio.apply_fill(update.fill)
            except DomainError as exc:
                self.anomaly(f"fill {update.fill.fill_id} cannot be booked: {exc}")
                return
            self._valuation = None
            self.fills.append(FillRecord(fill=update.fill))
            self.emit(
                msg.order_filled(
                    self.runner.context,
                    at=self.now,
                    fill=update.fill,
                    oms_order_id=order.oms_order_id,
                    status=order.status,
                    filled_quantity=order.filled_quantity,
                )
            )
        elif update.applied and update.status is OrderStatus.REJECTED:
            self.emit(
                msg.order_rejected(
                    self.runner.context,
                    at=self.now,
                    order=order.intent,
                    client_order_id=order.client_order_id,
                    source="oms",
                    reason_code="OMS_REJECTED",
                    reason=order.reason or "rejected by the OMS",
                )
            )

    def cancel_locally(self, order: OrderState, reason: str) -> None:
        """An order recorded but never seen by the OMS that must not leave any more."""
        before = order.status
        update = order.on_cancelled(reason)
        if update.applied and order.status is not before:
            self.changed[order.client_order_id] = order

    # ------------------------------------------------------------------ history

    def snapshot(self) -> None:
        """A `position_snapshots` row of the step's portfolio at the known marks."""
        self.snapshots.append(
            snapshot_of(
                self.execution_id, self.model.portfolio, self.valuation(), self.now, self.version
            )
        )

    # ------------------------------------------------------------------ the write

    def write(self) -> ExecutionWrite:
        """Everything decided, as the one write of this execution in the commit."""
        model = self.model
        terminal = not model.status.is_running
        state = model.to_state(self.valuation(), self.now if terminal else None)
        return ExecutionWrite(
            execution_id=self.execution_id,
            fence=self.runner.fence,
            version=self.version,
            create=replace(self.create, state=state) if self.create else None,
            state=None if self.create else state,
            next_intent_seq=model.next_seq,
            intents=tuple(self.intents),
            order_updates=tuple(stored_update(o) for o in self.changed.values()),
            fills=tuple(self.fills),
            risk_events=tuple(self.risk_rows),
            snapshots=tuple(self.snapshots),
            events=tuple(self._outbox()),
            controls=tuple(self.controls),
            decisions=tuple(self.decisions),
            release=self.release,
            protection=self.protection_write(),
            exposure=self.exposure(),
            new_buys=self.new_buys(),
        )

    def protection_write(self) -> ProtectionWrite | None:
        """The book's state when this step changed it (computed once: a retried write
        carries the same)."""
        if self._protection_copied and self._protection_write is None:
            self._protection_write = protective.write_of(self)
        return self._protection_write

    def new_buys(self) -> Decimal:
        """Buying power this step takes: its new buy intents plus buys it sets waiting for a
        rate token, less the waiting ones it released (they were reserved already)."""
        intents = sum((i.notional for i in self.intents if i.side is Side.BUY), ZERO)
        waiting = self.model.deferred_buys() - self.runner.model.deferred_buys()
        return max(ZERO, intents + waiting)

    def exposure(self) -> Decimal:
        """What the risk ledger must hold for the execution after this step
        (`ExecutionModel.exposure` at the step's marks)."""
        return self.model.exposure(self.valuation().market_value)

    def _outbox(self) -> list[OutboxEvent]:
        """The events with ids derived from (execution, version, position): deterministic."""
        return [
            OutboxEvent(
                event_id=uuid.uuid5(self.execution_id, f"event:{self.version}:{n}"),
                execution_id=self.execution_id,
                user_id=self.info.user_id,
                key=self.info.key,
                event_type=str(event["type"]),
                payload=event,
            )
            for n, event in enumerate(self.events)
        ]

    def finish(self, status: ExecutionStatus) -> None:
        """End the execution (it is flat): final status, snapshot, lease released."""
        self.model.status = status
        self.touched = True
        self.snapshot()
        self.release = True


def snapshot_of(
    execution_id: uuid.UUID, portfolio: Portfolio, val: Valuation, at: datetime, version: int
) -> SnapshotRecord:
    """A `position_snapshots` row (its id derived from the execution, version and instant,
    so writing it twice is harmless)."""
    return SnapshotRecord(
        snapshot_id=uuid.uuid5(execution_id, f"snapshot:{version}:{at.isoformat()}"),
        execution_id=execution_id,
        taken_at=at,
        positions=portfolio.to_json()["positions"],
        total_value=val.equity,
        total_pnl=val.total_pnl,
        unrealized_pnl=val.unrealized_pnl,
        realized_pnl=val.realized_pnl,
        cash=val.cash,
    )


def stored_update(state: OrderState) -> StoredOrderUpdate:
    """The `execution_orders` columns an order state owns."""
    return StoredOrderUpdate(
        client_order_id=state.client_order_id,
        status=state.status,
        filled_quantity=state.filled_quantity,
        filled_price=state.avg_fill_price if state.filled_quantity else None,
        oms_order_id=state.oms_order_id or None,
        fees=state.fees,
        reason=state.reason or None,
    )


def closing(
    symbol: str,
    quantity: Decimal,
    price: Decimal,
    execution_id: uuid.UUID,
    purpose: OrderPurpose = OrderPurpose.CLOSE,
) -> OrderIntent:
    """An unnumbered MARKET sell (numbered by `Step.add`)."""
    return OrderIntent(
        client_order_id="",
        execution_id=execution_id,
        intent_seq=0,
        symbol=symbol,
        side=Side.SELL,
        order_type=OrderType.MARKET,
        quantity=quantity,
        price=price,
        purpose=purpose,
    )


def is_closing(intent: OrderIntent) -> bool:
    return intent.purpose in _CLOSING
