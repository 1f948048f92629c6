"""What a strategy's own rules make an execution do, decided inside a step (no I/O).

Like `runtime/decide.py`, every function here works on a `Step` (a fork of the committed
model) and records what it decided there, so the decisions, the orders they caused and
their events are committed together or not at all (docs/signals.md):

- `apply_evaluations(step, evaluations)`: the bars an execution's `SignalEngine` evaluated,
  decided in each symbol's phase (derived from the step's model, `signal_phases.py`); each
  decision is recorded (`step.decisions`, a `signal_decision` event placed before the
  events of the orders it caused) and a fired one becomes an order through the usual risk
  gate, or records the gate that blocked it;
- `open_position`: an entry is sized then (`size_entry`), at the symbol's fresh mark;
- `close_position`: an exit sells what is held and not already being sold (purpose `EXIT`).

Stop-loss, daily loss, trading states, pause and stop keep priority: a paused execution
acts on no signal (`paused`), a stopping one neither (`trading_state`: the stop closes
everything), HALTED and REDUCING block entries (`trading_state`), a stopped-out symbol's
entry waits for its block to lift (`reentry_blocked`); an exit is a closing sell, which
passes in HALTED and REDUCING like any close.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from strategy_worker import messages as msg
from strategy_worker.domain.events import RiskEvent
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, Side
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.manager import RiskDecision, RiskReason
from strategy_worker.domain.signals.decisions import (
    Action,
    Gate,
    Outcome,
    SignalDecision,
    gate_for_risk_reason,
)
from strategy_worker.domain.signals.engine import BarEvaluation
from strategy_worker.domain.sizing import reserved_quantity, sized_orders
from strategy_worker.runtime.decide import available_exposure
from strategy_worker.runtime.signal_phases import entered_symbols, phase_of
from strategy_worker.runtime.step import Step, closing
from strategy_worker.store import ExecutionStatus

_STATUS_GATES: dict[RiskReason, Gate] = {
    RiskReason.EXECUTION_PAUSED: Gate.PAUSED,
    RiskReason.EXECUTION_STOPPING: Gate.TRADING_STATE,
}


# ---------------------------------------------------------------------- bars


def apply_evaluations(step: Step, evaluations: Sequence[BarEvaluation]) -> None:
    """Bars the execution's engine evaluated (oldest first) decided in this step: each in
    the symbol's phase derived from the step's model, so an order recorded for one bar is
    seen by the next; every decision is recorded and a fired one acted on. Pure on the
    evaluations: a step decided again (the risk ledger refused its commit) decides the
    same bars again, the same way or at the new totals."""
    for evaluation in evaluations:
        entered = entered_symbols(step.model, step.info)
        phase = phase_of(evaluation.bar.symbol, entered, step.info)
        for decision in evaluation.decisions(phase):
            record(step, decision)


def record(step: Step, decision: SignalDecision) -> SignalDecision:
    """Act on a fired decision (order or gate), then record it: a `signal_decisions` row
    and its event, placed before the events of the orders it caused."""
    at = len(step.events)
    if decision.outcome is Outcome.FIRED:
        if decision.action is Action.OPEN:
            gate = open_position(step, decision)
        else:
            gate = close_position(step, decision)
        decision = decision.with_gate(gate)
    step.decisions.append(decision)
    step.events.insert(
        at, msg.signal_decision(step.runner.context, at=decision.decided_at, decision=decision)
    )
    return decision


def _status_gate(step: Step) -> Gate | None:
    model = step.model
    if model.plans.stop is not None or not model.running:
        return Gate.TRADING_STATE
    if model.status is ExecutionStatus.PAUSED:
        return Gate.PAUSED
    return None


def open_position(step: Step, decision: SignalDecision) -> Gate | None:
    """An entry fired: size the symbol's buy now and put it through the gate; returns what
    blocked it (None: an order was recorded, or waits for a rate token)."""
    symbol = decision.symbol
    model = step.model
    gate = _status_gate(step)
    if gate is not None:
        return gate
    if model.risk.state.value != "ACTIVE":
        return Gate.TRADING_STATE
    if model.risk.stops.is_blocked(symbol):
        return Gate.REENTRY_BLOCKED
    price = step.fresh_marks().get(symbol)
    if price is None:
        return Gate.NO_PRICE
    ctx = step.risk_context(symbol)
    limits = step.info.limits
    sized = size_entry(
        symbol=symbol,
        weight=step.info.targets.get(symbol, ZERO),
        price=price,
        equity=step.valuation().equity,
        cash=ctx.cash,
        exposure_room=available_exposure(step),
        limits=limits,
        execution_id=step.execution_id,
    )
    for event in sized.events:
        step.risk(event)
    if sized.gate is not None:
        return sized.gate
    before, waiting = len(step.intents), len(model.plans.deferred)
    denials = step.gate(sized.intents)
    if len(step.intents) > before or len(step.model.plans.deferred) > waiting:
        return None
    return _denial_gate(denials)


def close_position(step: Step, decision: SignalDecision) -> Gate | None:
    """An exit fired: the symbol's buys still working are cancelled (at the OMS, as a stop
    does; those waiting for a rate token are dropped) and what is held and not already
    being sold (by a live sell, or a native protective leg the OMS has begun to fill) is
    sold (purpose EXIT)."""
    symbol = decision.symbol
    model = step.model
    gate = _status_gate(step)
    if gate is not None:
        return gate
    _cancel_buys(step, symbol)
    pos = model.portfolio.positions.get(symbol)
    # A native leg the OMS is already executing sells the position: the exit leaves it be.
    selling = model.pending_sells().get(symbol, ZERO) + model.executing_legs(symbol)
    quantity = (pos.quantity if pos else ZERO) - selling
    if pos is None or quantity <= 0:
        return Gate.NO_POSITION
    price = step.fresh_marks().get(symbol) or step.runner.marks.get(symbol) or pos.last_price
    intent = closing(symbol, quantity, price, step.execution_id, OrderPurpose.EXIT)
    before = len(step.intents)
    denials = step.gate([intent], defer_rate_limited=False)
    return None if len(step.intents) > before else _denial_gate(denials)


def _cancel_buys(step: Step, symbol: str) -> None:
    model = step.model
    for order in list(model.orders.values()):
        intent = order.intent
        if order.is_live and intent.side is Side.BUY and intent.symbol == symbol:
            live = step.order(order.client_order_id)
            if live is not None and not live.cancel_requested and live.request_cancel():
                step.cancels.append(live.client_order_id)
                step.touched = True
    waiting = model.plans.deferred
    kept = tuple(i for i in waiting if not (i.side is Side.BUY and i.symbol == symbol))
    if len(kept) == len(waiting):
        return
    for intent in waiting:
        if intent not in kept:
            step.emit(
                msg.order_rejected(
                    step.runner.context,
                    at=step.now,
                    order=intent,
                    client_order_id=None,
                    source="risk",
                    reason_code="EXIT_SIGNAL",
                    reason=f"the exit rule closed {symbol}: the waiting buy is not sent",
                )
            )
    step.set_plans(deferred=kept)


def _denial_gate(denials: Sequence[RiskDecision]) -> Gate | None:
    for denial in denials:
        if denial.reason is None:
            continue
        gate = _STATUS_GATES.get(denial.reason) or gate_for_risk_reason(str(denial.reason))
        if gate is not None:
            return gate
    return None


# ---------------------------------------------------------------------- sizing


@dataclass(frozen=True, slots=True)
class EntrySize:
    """The buy(s) an entry asks for, the sizing events, or the gate that leaves none."""

    intents: tuple[OrderIntent, ...]
    events: tuple[RiskEvent, ...]
    gate: Gate | None


def size_entry(
    *,
    symbol: str,
    weight: Decimal,
    price: Decimal,
    equity: Decimal,
    cash: Decimal,
    exposure_room: Decimal,
    limits: RiskLimits,
    execution_id: uuid.UUID,
) -> EntrySize:
    """Size an entry buy at `price` (the symbol's fresh mark) by the usual exact rules:
    the budget is `weight x equity` (the symbol's effective target weight of the current
    equity), bounded by the cash free of what buys in flight reserve and by the room left
    under the worker's exposure limit; whole shares whose reserved cost fits it (fees and
    slippage reserved, `RiskLimits.affordable_quantity`), split above `max_order_value`.
    A budget that buys less than `min_order_value` is no order: its gate says which bound
    made it so (`cash`, `exposure`, else `min_value`)."""
    budget, why = weight * equity, Gate.MIN_VALUE
    if cash < budget:
        budget, why = cash, Gate.CASH
    if exposure_room < budget:
        budget, why = exposure_room, Gate.EXPOSURE
    if budget <= 0:
        return EntrySize((), (), why)
    quantity = reserved_quantity(budget, price, limits)
    if quantity <= 0 or quantity * price < limits.min_order_value:
        return EntrySize((), (), why)
    events: list[RiskEvent] = []
    intents = sized_orders(
        execution_id=execution_id,
        seq=1,  # placeholder: renumbered below, then by `Step.add`
        symbol=symbol,
        side=Side.BUY,
        quantity=quantity,
        price=price,
        purpose=OrderPurpose.INITIAL,
        limits=limits,
        events=events,
    )
    # Unnumbered, like every intent before `Step.add` (client order ids stay consecutive).
    unnumbered = tuple(dataclasses.replace(i, intent_seq=0, client_order_id="") for i in intents)
    return EntrySize(unnumbered, tuple(events), None if unnumbered else Gate.MIN_VALUE)
