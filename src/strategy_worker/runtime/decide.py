"""What the runtime decides about one execution, each a pure function of a `Step`.

- `monitor`: the one monitor step, used by the periodic cycle and the price watch alike:
  the trading day opened at fresh marks, the daily loss halt, stop-losses, the marks for
  the protective orders (`protection.watch`).
- `settle`: run by the engine after every step: a rebalance's buys once its sells are
  done, a stop's next closing round, orders waiting for a rate token, and last the
  protective orders' facts and decision (`protection.protect`).
- `rebalance`, `begin_stop` / `drive_stop` / `finish_stop`, `resubmit_unseen`, `fault`.

None of them performs I/O; the engine commits what they decided and then acts on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from strategy_worker import messages as msg
from strategy_worker.domain.events import (
    RiskEvent,
    RiskEventType,
    Severity,
    StopLossTriggered,
    details,
)
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.domain.rebalancing import plan_rebalance
from strategy_worker.domain.risk.manager import RiskReason
from strategy_worker.runtime import protection
from strategy_worker.runtime.model import StopPlan
from strategy_worker.runtime.signal_phases import rebalance_targets
from strategy_worker.runtime.step import Step, closing
from strategy_worker.store import ExecutionStatus

STOP_ALERT_ROUNDS = 3
"""Closing rounds after which an unfinished stop raises CRITICAL `STOP_INCOMPLETE`."""
_ROUND_BASE_S = 1.0
_ROUND_CAP_S = 30.0


def round_delay(rounds: int) -> float:
    """Seconds before the next closing round after `rounds` (capped exponential)."""
    return float(min(_ROUND_CAP_S, _ROUND_BASE_S * 2 ** max(0, rounds - 1)))


# ---------------------------------------------------------------------- monitor


def monitor(step: Step) -> None:
    """Position check at the runner's marks: open the trading day when due (only at fresh
    marks of every held symbol), halt on the daily loss, fire stop-losses."""
    model = step.model
    risk = model.risk
    runner = step.runner
    ts = step.timestamp
    fresh_all = runner.all_held_fresh(ts, step.ctx.price_max_age)
    due = ts >= risk.next_day_ts
    if due or model.plans.day_start_pending:
        if fresh_all:
            risk.start_day(step.now, step.valuation().equity)
            if model.plans.day_start_pending:
                step.set_plans(day_start_pending=False)
            step.touched = True
        elif due:
            risk.open_pending(step.now)
            step.set_plans(day_start_pending=True)
    equity = step.valuation().equity
    if risk.day_start_known and equity <= risk.loss_floor and not risk.halted:
        risk.halt(equity)
    step.drain_risk_state()
    _stop_losses(step)
    protection.watch(step)


def _stop_losses(step: Step) -> None:
    model = step.model
    fresh = step.fresh_marks()
    pending = model.pending_sells()
    if protection.owns_stop_loss(step.info):
        # The protection book exits stopped positions (and says so): the monitor keeps the
        # warning zone and the re-entry block, and sends nothing itself.
        pending = {s: p.quantity for s, p in model.portfolio.positions.items()}
    scan = model.risk.stops.scan(
        model.portfolio.positions,
        fresh,
        execution_id=step.execution_id,
        first_seq=model.next_seq,
        pending_sells=pending,
    )
    if not scan.events and not scan.intents:
        return
    step.touched = True  # the zone and stop-out state changed
    valuation = step.valuation()
    for event in scan.events:
        step.risk(event.risk_event)
        if isinstance(event, StopLossTriggered):
            pos = valuation.positions.get(event.symbol)
            step.emit(
                msg.stop_loss_triggered(
                    step.runner.context,
                    at=step.now,
                    symbol=event.symbol,
                    quantity=event.quantity,
                    average_cost=pos.avg_cost if pos else ZERO,
                    stop_price=event.stop_level,
                    price=event.mark,
                    unrealized_pnl=pos.unrealized_pnl if pos else ZERO,
                )
            )
    if scan.intents:
        step.gate(scan.intents, defer_rate_limited=False)


# ---------------------------------------------------------------------- settle


def settle(step: Step) -> None:
    """What is due after any step: a stop's next round, a rebalance's buys, waiting orders,
    then the protective orders (last: they see every order the step added)."""
    if step.model.plans.stop is not None:
        drive_stop(step)
    else:
        _rebalance_buys(step)
        if step.model.status is ExecutionStatus.ACTIVE:
            release_deferred(step)  # paused: waiting orders wait on (no new entries)
    protection.protect(step)


def release_deferred(step: Step) -> None:
    """Orders that waited for a rate token: re-priced at a fresh mark, checked again now,
    sent when a token is free; still rate-limited ones keep waiting, others are denied."""
    waiting = step.model.plans.deferred
    if not waiting:
        return
    fresh = step.fresh_marks()
    keep: list[OrderIntent] = []
    for intent in waiting:
        price = fresh.get(intent.symbol)
        candidate = replace(intent, price=price) if price is not None else intent
        step.release_checking(intent)
        decision = step.check(candidate)
        step.release_checking(None)
        if decision.approved:
            qty = decision.quantity_for(candidate)
            step.add([candidate if qty == candidate.quantity else replace(candidate, quantity=qty)])
        elif decision.reason is RiskReason.RATE_LIMITED:
            keep.append(intent)
        else:
            step.denied(candidate, decision)
    if len(keep) != len(waiting):
        step.set_plans(deferred=tuple(keep))


# ---------------------------------------------------------------------- rebalancing


def rebalance(step: Step, threshold: Decimal) -> None:
    """Plan a rebalance at fresh marks when drift exceeds `threshold` and nothing is in
    flight: sells first; the buys are planned again once the sells are done (see
    `settle`), so they are sized with the cash the sells really freed."""
    model = step.model
    if (
        model.status is not ExecutionStatus.ACTIVE
        or model.plans.stop is not None
        or model.risk.state.value != "ACTIVE"
        or model.working_orders()
        or model.plans.deferred
        or model.plans.rebalance_drift is not None
    ):
        return
    plan = _plan(step, threshold)
    if plan is None:
        return
    for event in plan.events:
        step.risk(event)
    if not plan.triggered or not plan.intents:
        if plan.events:
            step.touched = True
        return
    if plan.sells:
        first = step.model.next_seq
        before = len(step.intents)
        step.gate(plan.sells)
        if len(step.intents) > before:
            step.set_plans(rebalance_drift=plan.drift, rebalance_from=first)
            return
    step.gate(plan.buys)
    step.emit(
        msg.rebalanced(step.runner.context, at=step.now, max_drift=plan.drift, orders=step.intents)
    )


def _plan(step: Step, threshold: Decimal):  # type: ignore[no-untyped-def]
    fresh = step.fresh_marks()
    if not fresh:
        return None
    valuation = step.valuation()
    info = step.info
    return plan_rebalance(
        valuation,
        rebalance_targets(info, step.model),  # with rules: entered symbols' weights only
        fresh,
        info.limits,
        execution_id=step.execution_id,
        first_seq=step.model.next_seq,
        threshold=threshold,
        blocked=frozenset(step.model.risk.stops.stopped_out),
        available_exposure=available_exposure(step),
    )


def available_exposure(step: Step) -> Decimal:
    """What the fleet's (and, when capped, the user's) exposure limit still leaves for new
    buys of this execution, at the ledger totals last seen."""
    limits = step.info.limits
    own = step.exposure()
    room = limits.max_total_exposure - step.ctx.exposure.others(step.execution_id) - own
    if limits.max_user_exposure is not None:
        user = step.ctx.exposure.user_others(step.info.user_id, step.execution_id)
        room = min(room, limits.max_user_exposure - user - own)
    return room


def _rebalance_buys(step: Step) -> None:
    model = step.model
    drift = model.plans.rebalance_drift
    if drift is None:
        return
    if any(
        o.is_live and o.intent.purpose is OrderPurpose.REBALANCE and o.intent.side is Side.SELL
        for o in model.orders.values()
    ):
        return
    first = model.plans.rebalance_from
    step.set_plans(rebalance_drift=None, rebalance_from=0)
    sold = sorted(
        (
            o.intent
            for o in model.orders.values()
            if o.intent.purpose is OrderPurpose.REBALANCE
            and o.intent.side is Side.SELL
            and o.intent.intent_seq >= first
        ),
        key=lambda i: i.intent_seq,
    )
    bought: list[OrderIntent] = []
    if model.status is ExecutionStatus.ACTIVE and model.risk.state.value == "ACTIVE":
        plan = _plan(step, Decimal(-1))
        if plan is not None and plan.buys:
            before = len(step.intents)
            step.gate(plan.buys)
            bought = [i for i in step.intents[before:] if i.side is Side.BUY]
    step.emit(
        msg.rebalanced(step.runner.context, at=step.now, max_drift=drift, orders=[*sold, *bought])
    )


# ---------------------------------------------------------------------- stopping


def begin_stop(
    step: Step,
    *,
    reason: str,
    final: ExecutionStatus = ExecutionStatus.STOPPED,
    request_id: uuid.UUID | None = None,
) -> None:
    """Start stopping: no new entries, every position closed, protection kept until flat;
    durable, so a worker taking the execution over finishes the stop."""
    model = step.model
    if model.plans.stop is not None or not model.running:
        return
    for intent in model.plans.deferred:
        step.emit(
            msg.order_rejected(
                step.runner.context,
                at=step.now,
                order=intent,
                client_order_id=None,
                source="risk",
                reason_code="EXECUTION_STOPPING",
                reason="the execution is stopping: the waiting order is not sent",
            )
        )
    step.set_plans(
        stop=StopPlan(reason=reason, final=final, requested_at=step.now, request_id=request_id),
        deferred=(),
        rebalance_drift=None,
    )
    step.emit(
        msg.execution_stopping(
            step.runner.context,
            at=step.now,
            reason=reason,
            held={s: p.quantity for s, p in model.portfolio.positions.items()},
            request_id=request_id,
        )
    )
    drive_stop(step)


def drive_stop(step: Step) -> None:
    """A stop's next move: cancel live buys (and protective LIMIT exits, which may rest
    below a gap), close what is held and not being sold (a rejected close is retried with
    capped backoff), alert when it does not complete."""
    model = step.model
    plan = model.plans.stop
    if plan is None:
        return
    legs = model.resting_legs().legs
    for order in list(model.orders.values()):
        if order.is_live and not order.cancel_requested and _in_the_way(order.intent, legs):
            # Asked at the OMS, never assumed: a buy the OMS never saw is cancelled here
            # only by reconciliation, once the OMS says so (`resubmit_unseen`).
            live = step.order(order.client_order_id)
            if live is not None and live.request_cancel():
                step.cancels.append(live.client_order_id)
    pending = model.pending_sells()
    open_qty = {
        sym: pos.quantity - pending.get(sym, ZERO)
        for sym, pos in sorted(model.portfolio.positions.items())
        if pos.quantity - pending.get(sym, ZERO) > 0
    }
    ts = step.timestamp
    if open_qty and ts >= plan.next_round_at:
        marks = step.runner.marks
        step.gate(
            [
                closing(
                    sym,
                    qty,
                    marks.get(sym) or model.portfolio.positions[sym].last_price,
                    step.execution_id,
                )
                for sym, qty in open_qty.items()
            ],
            defer_rate_limited=False,
        )
        rounds = plan.rounds + 1
        plan = replace(plan, rounds=rounds, next_round_at=ts + round_delay(rounds))
        step.set_plans(stop=plan)
    if open_qty and plan.rounds >= STOP_ALERT_ROUNDS and not plan.alerted:
        step.risk(
            RiskEvent(
                event_type=RiskEventType.STOP_INCOMPLETE,
                severity=Severity.CRITICAL,
                description=(
                    f"stop not complete after {plan.rounds} closing rounds; still held: "
                    + ", ".join(f"{q} {s}" for s, q in open_qty.items())
                ),
                action_taken="closing retried with backoff; stop-loss protection kept",
                details=details(rounds=plan.rounds, reason=plan.reason),
            )
        )
        step.set_plans(stop=replace(plan, alerted=True))


def _in_the_way(intent: OrderIntent, legs: frozenset[str]) -> bool:
    """A live order a stop cancels: a buy, or an emulated protective exit working as a
    LIMIT (a stop-limit's exit the price gapped past would hold the close up forever)."""
    if intent.side is Side.BUY:
        return True
    return (
        intent.purpose.is_protective
        and intent.order_type is OrderType.LIMIT
        and intent.client_order_id not in legs
    )


def finish_stop(step: Step, oms_positions: Mapping[str, Decimal]) -> bool:
    """End a stop once the execution is flat here AND at the OMS; True when it ended."""
    model = step.model
    plan = model.plans.stop
    if plan is None or not model.running:
        return False
    if model.portfolio.positions or model.live_orders():
        return False
    held = {s: q for s, q in oms_positions.items() if q != 0}
    if held:
        step.anomaly(
            "the OMS still holds "
            + ", ".join(f"{q} {s}" for s, q in sorted(held.items()))
            + " after every local position was closed"
        )
        return False
    step.finish(plan.final)
    val = step.valuation()
    step.emit(
        msg.execution_stopped(
            step.runner.context,
            at=step.now,
            reason=plan.reason,
            realized_pnl=val.realized_pnl,
            total_pnl=val.total_pnl,
            status=plan.final.value,
            request_id=plan.request_id,
        )
    )
    return True


# ---------------------------------------------------------------------- recovery


def resubmit_unseen(step: Step, unseen: Sequence[str]) -> None:
    """Recorded orders the OMS has never seen: each passes the risk gate again, now;
    those the current state forbids (a BUY while HALTED, REDUCING or stopping, a close the
    position no longer needs) are cancelled here with an event instead of being sent."""
    model = step.model
    for coid in unseen:
        order = step.order(coid)
        if order is None or not order.is_live:
            continue
        intent = order.intent
        if intent.purpose.is_protective and intent.reduce_only:
            protection.resubmit(step, order)  # the book's: never through the gate
            continue
        if model.plans.stop is not None and intent.side is Side.BUY:
            step.cancel_locally(order, "not sent: the execution is stopping")
            _not_sent(step, intent, "EXECUTION_STOPPING", "the execution is stopping")
            continue
        decision = step.check(intent, exclude=coid)
        if decision.approved and decision.quantity_for(intent) == intent.quantity:
            step.resend.append(intent)
        elif decision.reason is RiskReason.RATE_LIMITED:
            continue  # still recorded: the next reconciliation tries again
        else:
            step.cancel_locally(order, f"not sent: {decision.reason}")
            step.denied(intent, decision, coid=coid)


def _not_sent(step: Step, intent: OrderIntent, code: str, text: str) -> None:
    step.emit(
        msg.order_rejected(
            step.runner.context,
            at=step.now,
            order=intent,
            client_order_id=intent.client_order_id,
            source="risk",
            reason_code=code,
            reason=text,
        )
    )


def fault(step: Step, code: str, text: str) -> None:
    """An unexpected failure: never abandon the positions. The execution goes REDUCING
    (only sells), raises CRITICAL `EXECUTION_FAULT`, and is closed by policy: a stop whose
    final status is `error`, protected by its stop-losses until it is flat."""
    step.emit(
        msg.execution_error(step.runner.context, at=step.now, error_code=code, message=text[:500])
    )
    step.risk(
        RiskEvent(
            event_type=RiskEventType.EXECUTION_FAULT,
            severity=Severity.CRITICAL,
            description=f"unexpected {code}: {text[:300]}",
            action_taken="REDUCING; closing every position, then status error",
            details=details(error=code),
        )
    )
    step.anomaly(f"unexpected {code}")
    begin_stop(step, reason=f"error: {code}", final=ExecutionStatus.ERROR)


def ledger_repaired(step: Step, *, held: Decimal, recomputed: Decimal) -> None:
    """The ledger's audit found what this execution held in it wrong and repaired it."""
    step.risk(
        RiskEvent(
            event_type=RiskEventType.LEDGER_REPAIRED,
            severity=Severity.WARNING,
            description=f"risk ledger held {held} for the execution; its orders and positions "
            f"give {recomputed}",
            action_taken="ledger entry and totals repaired",
            details=details(held=held, recomputed=recomputed),
        )
    )
