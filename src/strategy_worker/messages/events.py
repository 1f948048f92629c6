"""`strategy.execution` events: one builder per type, all starting with the same fields."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from strategy_worker.domain.orders import Fill, OrderIntent, OrderStatus, Side
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.messages.jsonwire import isoformat_z, money_number, quantity_number


class EventType(StrEnum):
    """Every `type` the worker publishes on `strategy.execution`."""

    STARTED = "strategy.execution.started"
    ORDER_SUBMITTED = "strategy.execution.order_submitted"
    ORDER_FILLED = "strategy.execution.order_filled"
    ORDER_REJECTED = "strategy.execution.order_rejected"
    RISK_EVENT = "strategy.execution.risk_event"
    STOP_LOSS_TRIGGERED = "strategy.execution.stop_loss_triggered"
    REBALANCED = "strategy.execution.rebalanced"
    PAUSED = "strategy.execution.paused"
    RESUMED = "strategy.execution.resumed"
    REFUSED = "strategy.execution.refused"
    STOPPING = "strategy.execution.stopping"
    STOPPED = "strategy.execution.stopped"
    ERROR = "strategy.execution.error"
    SIGNAL_DECISION = "strategy.execution.signal_decision"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class EventContext:
    """Who an event is about: the fields every `strategy.execution` event starts with."""

    execution_id: uuid.UUID
    strategy_id: uuid.UUID
    user_id: uuid.UUID

    @property
    def key(self) -> str:
        """The Kafka key of this execution's events (the strategy id, per the spec)."""
        return str(self.strategy_id)


class OrderLike(Protocol):
    """An order as the events describe it (`OrderIntent` fits)."""

    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...


def _base(event_type: EventType, ctx: EventContext, at: datetime) -> dict[str, object]:
    execution_id, strategy_id, user_id = _ids(ctx)
    return {
        "type": str(event_type),
        "execution_id": execution_id,
        "strategy_id": strategy_id,
        "user_id": user_id,
        "timestamp": isoformat_z(at),
    }


_LAST_IDS: list[tuple[EventContext, tuple[str, str, str]]] = []
"""The ids of the last context as text: the events of one step share their context."""


def _ids(ctx: EventContext) -> tuple[str, str, str]:
    last = _LAST_IDS[0] if _LAST_IDS else None
    if last is not None and last[0] is ctx:
        return last[1]
    text = (str(ctx.execution_id), str(ctx.strategy_id), str(ctx.user_id))
    _LAST_IDS[:] = [(ctx, text)]
    return text


def _order_line(order: OrderLike) -> dict[str, object]:
    return {
        "symbol": order.symbol,
        "side": str(order.side),
        "quantity": quantity_number(order.quantity),
        "price": money_number(order.price),
        "value": money_number(order.quantity * order.price),
    }


def execution_started(
    ctx: EventContext,
    *,
    at: datetime,
    initial_orders: Sequence[OrderLike],
    awaiting_entry: Sequence[str] | None = None,
) -> dict[str, object]:
    """`strategy.execution.started`, exactly the spec's shape (`value` = quantity x price).

    A strategy with entry rules adds `awaiting_entry`: the symbols whose first buy waits
    for their entry signal (docs/signals.md); without rules the event has no such field."""
    event = _base(EventType.STARTED, ctx, at)
    event["status"] = "active"
    event["initial_orders"] = [_order_line(order) for order in initial_orders]
    if awaiting_entry is not None:
        event["awaiting_entry"] = list(awaiting_entry)
    return event


def order_submitted(
    ctx: EventContext, *, at: datetime, intent: OrderIntent, oms_order_id: str | None
) -> dict[str, object]:
    """An order was accepted for submission to the OMS (`oms_order_id` once known)."""
    event = _base(EventType.ORDER_SUBMITTED, ctx, at)
    event.update(
        client_order_id=intent.client_order_id,
        oms_order_id=oms_order_id,
        order_type=str(intent.order_type),
        purpose=str(intent.purpose),
        **_order_line(intent),
    )
    if intent.limit_price is not None:
        event["limit_price"] = money_number(intent.limit_price)
    return event


def order_filled(
    ctx: EventContext,
    *,
    at: datetime,
    fill: Fill,
    oms_order_id: str,
    status: OrderStatus,
    filled_quantity: Decimal,
) -> dict[str, object]:
    """One fill of an order; `filled_quantity` is cumulative, `status` the order's after it."""
    event = _base(EventType.ORDER_FILLED, ctx, at)
    event.update(
        client_order_id=fill.client_order_id,
        oms_order_id=oms_order_id,
        fill_id=fill.fill_id,
        **_order_line(fill),
        fee=money_number(fill.fee),
        filled_quantity=quantity_number(filled_quantity),
        status=str(status),
        filled_at=isoformat_z(fill.filled_at),
    )
    return event


def order_rejected(
    ctx: EventContext,
    *,
    at: datetime,
    order: OrderLike,
    client_order_id: str | None,
    source: str,
    reason_code: str,
    reason: str,
) -> dict[str, object]:
    """An order refused by the risk gate (`source` "risk", no client id) or by the OMS."""
    event = _base(EventType.ORDER_REJECTED, ctx, at)
    event.update(
        client_order_id=client_order_id,
        **_order_line(order),
        source=source,
        reason_code=reason_code,
        reason=reason,
    )
    return event


def risk_event(
    ctx: EventContext,
    *,
    at: datetime,
    event_type: str,
    severity: str,
    description: str,
    action_taken: str,
    symbol: str | None = None,
    details: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Mirror of a `risk_events` row (severity INFO, WARNING or CRITICAL; details as strings)."""
    event = _base(EventType.RISK_EVENT, ctx, at)
    event.update(
        event_type=str(event_type),
        severity=str(severity),
        description=description,
        action_taken=action_taken,
        symbol=symbol,
        details=dict(details or {}),
    )
    return event


def stop_loss_triggered(
    ctx: EventContext,
    *,
    at: datetime,
    symbol: str,
    quantity: Decimal,
    average_cost: Decimal,
    stop_price: Decimal,
    price: Decimal,
    unrealized_pnl: Decimal,
) -> dict[str, object]:
    """A position crossed its stop (with buffer) at `price`; a closing order follows."""
    event = _base(EventType.STOP_LOSS_TRIGGERED, ctx, at)
    event.update(
        symbol=symbol,
        quantity=quantity_number(quantity),
        average_cost=money_number(average_cost),
        stop_price=money_number(stop_price),
        price=money_number(price),
        unrealized_pnl=money_number(unrealized_pnl),
    )
    return event


def rebalanced(
    ctx: EventContext, *, at: datetime, max_drift: Decimal, orders: Sequence[OrderLike]
) -> dict[str, object]:
    """A rebalance batch was decided because the largest drift exceeded the threshold."""
    event = _base(EventType.REBALANCED, ctx, at)
    event.update(max_drift=max_drift, orders=[_order_line(order) for order in orders])
    return event


def _status_change(
    event_type: EventType,
    status: str,
    ctx: EventContext,
    at: datetime,
    reason: str,
    request_id: uuid.UUID | None,
) -> dict[str, object]:
    event = _base(event_type, ctx, at)
    event.update(status=status, reason=reason, request_id=str(request_id) if request_id else None)
    return event


def execution_paused(
    ctx: EventContext, *, at: datetime, reason: str, request_id: uuid.UUID | None = None
) -> dict[str, object]:
    return _status_change(EventType.PAUSED, "paused", ctx, at, reason, request_id)


def execution_resumed(
    ctx: EventContext, *, at: datetime, reason: str, request_id: uuid.UUID | None = None
) -> dict[str, object]:
    return _status_change(EventType.RESUMED, "active", ctx, at, reason, request_id)


def execution_refused(
    ctx: EventContext,
    *,
    at: datetime,
    reason_code: str,
    reason: str,
    requested: Decimal,
    available: Decimal,
    funded_fraction: Decimal,
) -> dict[str, object]:
    """An approved strategy was not started: the exposure capacity left funds less of its
    first orders than `risk.min_funded_fraction` (no execution exists; the id is the one it
    would have had)."""
    event = _base(EventType.REFUSED, ctx, at)
    event.update(
        status="refused",
        reason_code=reason_code,
        reason=reason,
        requested=money_number(requested),
        available=money_number(max(available, Decimal(0))),
        funded_fraction=funded_fraction,
    )
    return event


def execution_stopping(
    ctx: EventContext,
    *,
    at: datetime,
    reason: str,
    held: Mapping[str, Decimal],
    request_id: uuid.UUID | None = None,
) -> dict[str, object]:
    """A stop began: no new entries; the positions still `held` are being closed, and the
    execution stays protected (stop-loss, daily loss) until the OMS confirms it flat."""
    event = _status_change(EventType.STOPPING, "stopping", ctx, at, reason, request_id)
    event["held"] = {sym: quantity_number(qty) for sym, qty in sorted(held.items())}
    return event


def execution_stopped(
    ctx: EventContext,
    *,
    at: datetime,
    reason: str,
    realized_pnl: Decimal,
    total_pnl: Decimal,
    status: str = "stopped",
    request_id: uuid.UUID | None = None,
) -> dict[str, object]:
    """The execution ended flat at the OMS: `status` is `stopped` (asked for, or worker
    shutdown with policy close) or `error` (closed after an unexpected failure)."""
    event = _status_change(EventType.STOPPED, status, ctx, at, reason, request_id)
    event.update(realized_pnl=money_number(realized_pnl), total_pnl=money_number(total_pnl))
    return event


def execution_error(
    ctx: EventContext, *, at: datetime, error_code: str, message: str
) -> dict[str, object]:
    """An unexpected failure: the execution is closed by policy (a `stopping` and, once
    flat, a `stopped` event with status `error` follow); no secrets or tracebacks."""
    event = _base(EventType.ERROR, ctx, at)
    event.update(status="error", error_code=error_code, message=message)
    return event


def _indicator_number(value: float | None) -> Decimal | None:
    """An indicator value as a JSON number: the float's shortest round-tripping text, made
    a Decimal so the encoder (which refuses floats, to protect money) writes it as is."""
    return None if value is None else Decimal(repr(value))


def signal_decision(
    ctx: EventContext, *, at: datetime, decision: SignalDecision
) -> dict[str, object]:
    """A rule evaluation that fired or changed its outcome, with what it read and, when no
    order followed, the gate that blocked it (docs/signals.md, "Decision events").

    Money (`close`) is exact; indicator values are JSON numbers (floats by nature)."""
    event = _base(EventType.SIGNAL_DECISION, ctx, at)
    event.update(
        symbol=decision.symbol,
        timeframe=str(decision.timeframe),
        bar_start=isoformat_z(decision.bar_start),
        bar_end=isoformat_z(decision.bar_end),
        rule=str(decision.rule),
        outcome=str(decision.outcome),
        action=None if decision.action is None else str(decision.action),
        gate=None if decision.gate is None else str(decision.gate),
        close=money_number(decision.close),
        values={label: _indicator_number(v) for label, v in decision.values.items()},
        conditions=[
            {
                "left": c.left,
                "op": c.op,
                "right": c.right,
                "left_value": _indicator_number(c.left_value),
                "right_value": _indicator_number(c.right_value),
                "previous": None
                if c.previous is None
                else [_indicator_number(v) for v in c.previous],
                "result": c.result,
            }
            for c in decision.conditions
        ],
        decided_at=isoformat_z(decision.decided_at),
    )
    return event
