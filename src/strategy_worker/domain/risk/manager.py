"""Pre-trade risk checks: one `RiskManager.check(order, context)` per order submission.

Built for speed (bench/bench_risk.py): limits are copied into slots as Decimals at
construction, the pass path allocates nothing but the order value and returns the shared
`APPROVED` singleton, and events (f-strings) are built only when something is wrong.

Order of checks for a BUY: trading state, re-entry block, min order value, then the
capacity limits (max order value, position size, cash: the order's reserved cost, i.e. a
fill up to the slippage reserve worse plus the fee reserve) which RESIZE down when a smaller
order still fits, then worker exposure and the rate limit, which DENY. For a SELL: trading
state, the held quantity (long-only; resized down to what is held and not already being
sold), order value (closing sells -- CLOSE and the protective exits STOP_LOSS, TAKE_PROFIT,
TRAILING_STOP -- and whole-position sells are exempt), rate limit.
An approved decision consumes one token of the execution's and of the worker's bucket:
call `check` exactly once per submission, right before recording the intent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

from strategy_worker.domain.clock import Clock, epoch_seconds
from strategy_worker.domain.events import (
    OrderDenied,
    OrderResized,
    RiskEvent,
    RiskEventType,
    Severity,
    details,
)
from strategy_worker.domain.money import ZERO, floor_quantity, quantize_cash
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, Side
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.rate_limit import TokenBucket
from strategy_worker.domain.risk.state import ExecutionRisk
from strategy_worker.domain.strategy import StrategyRiskParams


class Outcome(StrEnum):
    APPROVED = "APPROVED"
    RESIZED = "RESIZED"
    DENIED = "DENIED"


class RiskReason(StrEnum):
    """Stable reason codes of resized and denied orders."""

    INVALID_ORDER = "INVALID_ORDER"
    TRADING_HALTED = "TRADING_HALTED"
    TRADING_REDUCING = "TRADING_REDUCING"
    REENTRY_BLOCKED = "REENTRY_BLOCKED"
    ORDER_VALUE_BELOW_MIN = "ORDER_VALUE_BELOW_MIN"
    ORDER_VALUE_ABOVE_MAX = "ORDER_VALUE_ABOVE_MAX"
    POSITION_LIMIT = "POSITION_LIMIT"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    EXPOSURE_LIMIT = "EXPOSURE_LIMIT"
    USER_EXPOSURE_LIMIT = "USER_EXPOSURE_LIMIT"
    NO_POSITION = "NO_POSITION"
    OVERSELL = "OVERSELL"
    RATE_LIMITED = "RATE_LIMITED"
    EXECUTION_PAUSED = "EXECUTION_PAUSED"
    EXECUTION_STOPPING = "EXECUTION_STOPPING"


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """APPROVED (as ordered), RESIZED (to `quantity`) or DENIED (for `reason`)."""

    outcome: Outcome
    #: The approved quantity when RESIZED; None otherwise.
    quantity: Decimal | None = None
    reason: RiskReason | None = None
    events: tuple[RiskEvent, ...] = ()

    @property
    def approved(self) -> bool:
        """True when the order (possibly resized) may be sent."""
        return self.outcome is not Outcome.DENIED

    def quantity_for(self, order: OrderIntent) -> Decimal:
        """The quantity to send: 0 when denied."""
        if self.outcome is Outcome.DENIED:
            return ZERO
        return order.quantity if self.quantity is None else self.quantity

    def to_event(self, order: OrderIntent) -> OrderDenied | OrderResized | None:
        """The past-tense event of a denial or a resize (None when approved as is)."""
        if self.reason is None or not self.events:
            return None
        if self.outcome is Outcome.DENIED:
            return OrderDenied(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=self.reason.value,
                risk_event=self.events[0],
            )
        return OrderResized(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            requested_quantity=order.quantity,
            approved_quantity=self.quantity_for(order),
            reason=self.reason.value,
            risk_event=self.events[0],
        )


#: The one decision of the pass path: nothing to report, send as ordered.
APPROVED: Final = RiskDecision(Outcome.APPROVED)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskContext:
    """What the check needs to know besides the order; built by the runtime.

    `cash` is the execution's cash minus what its buys in flight may still take: their
    reserved cost (`RiskLimits.reserved_buy_cost` of the remaining notional), so that worse
    fills and fees of orders already sent are budgeted too; `worker_exposure` is the market
    value of every long position of the worker plus all buys in flight, before this order.
    """

    execution: ExecutionRisk
    equity: Decimal
    cash: Decimal
    position_quantity: Decimal = ZERO
    pending_buy_quantity: Decimal = ZERO
    pending_sell_quantity: Decimal = ZERO
    worker_exposure: Decimal = ZERO
    user_exposure: Decimal = ZERO
    """The same for the order's user (checked only when `max_user_exposure` is set)."""


_BUY = Side.BUY
#: CLOSE and every protective exit (`OrderPurpose.is_closing`): they reduce risk, so they
#: pass in HALTED, skip the order-value bounds and are never throttled.
_CLOSING = frozenset(p for p in OrderPurpose if p.is_closing)
_APPROVED = APPROVED


class RiskManager:
    """Worker-wide pre-trade risk checks over per-execution `ExecutionRisk` states."""

    __slots__ = (
        "_clock",
        "_cost_factor",
        "_max_exposure",
        "_max_value",
        "_min_value",
        "_order_fee",
        "_seconds",
        "_worker_bucket",
        "limits",
    )

    def __init__(self, limits: RiskLimits, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self._seconds = epoch_seconds(clock)
        self._min_value = limits.min_order_value
        self._max_value = limits.max_order_value
        self._max_exposure = limits.max_total_exposure
        # The cash check budgets the most a buy can cost within the slippage and fee reserve.
        self._cost_factor = limits.buy_cost_factor
        self._order_fee = limits.fee_reserve_per_order
        self._worker_bucket = TokenBucket(
            limits.worker_orders_per_second, limits.worker_order_burst, clock.now().timestamp()
        )

    def new_execution(
        self,
        execution_id: uuid.UUID,
        *,
        start_equity: Decimal,
        risk_params: StrategyRiskParams | None = None,
    ) -> ExecutionRisk:
        """Risk state for a new (or resumed) execution, limits tightened by its strategy."""
        return ExecutionRisk(
            execution_id,
            self.limits.tightened_by(risk_params),
            start_equity=start_equity,
            now=self._clock.now(),
        )

    def observe(self, execution: ExecutionRisk, equity: Decimal) -> None:
        """Monitor tick: roll the trading day, halt on daily loss (events in the outbox)."""
        execution.observe(self._clock.now(), equity)

    def check(self, order: OrderIntent, context: RiskContext) -> RiskDecision:
        """Approve, resize or deny one order; never raises on a bad order.

        The BUY pass path is written out inline (no helper calls, buckets included): it is
        the hot path the benchmark measures.
        """
        ex = context.execution
        now = self._seconds()
        equity = context.equity
        # The trading day is opened by the monitor step at fresh marks, never here: an
        # order check may run on a valuation at fill prices (just after a restart).
        if equity <= ex.loss_floor and not ex.halted:
            ex.halt(equity)
        qty = order.quantity
        price = order.price
        if qty <= 0 or price <= 0:
            return _deny(order, RiskReason.INVALID_ORDER, "quantity and price must be positive")
        if order.side is not _BUY:
            return self._check_sell(order, context, ex, now, qty, price)
        if ex.halted or ex.reducing or ex.operator_reducing or ex.stops.stopped_out:
            denied = _buy_state_denial(order, ex)
            if denied is not None:
                return denied
        notional = qty * price
        if notional < self._min_value:
            return _deny(
                order,
                RiskReason.ORDER_VALUE_BELOW_MIN,
                f"order value {notional} < minimum {self._min_value}",
            )
        # Position caps derive from equity; reuse them while the runtime passes the same value.
        if equity is not ex.caps_equity:
            ex.caps_equity = equity
            ex.position_cap = ex.max_position * equity
            ex.warning_cap = ex.warn_position * equity
        pending = context.pending_buy_quantity
        held = context.position_quantity + pending if pending else context.position_quantity
        held_value = held * price
        if (
            notional > self._max_value
            or notional + held_value > ex.position_cap
            or notional * self._cost_factor + self._order_fee > context.cash
        ):
            return self._resize_buy(order, context, ex, now, held_value)
        if context.worker_exposure + notional > self._max_exposure:
            return _exposure_denial(order, context.worker_exposure, notional, self._max_exposure)
        user_cap = self.limits.max_user_exposure
        if user_cap is not None and context.user_exposure + notional > user_cap:
            return _user_exposure_denial(order, context.user_exposure, notional, user_cap)
        # Both token buckets, inline (see TokenBucket for the same logic as methods).
        bucket = ex.bucket
        worker = self._worker_bucket
        if now > bucket.last:
            tokens = bucket.tokens + (now - bucket.last) * bucket.rate
            bucket.tokens = tokens if tokens < bucket.burst else bucket.burst
            bucket.last = now
        if now > worker.last:
            tokens = worker.tokens + (now - worker.last) * worker.rate
            worker.tokens = tokens if tokens < worker.burst else worker.burst
            worker.last = now
        if bucket.tokens < 1.0 or worker.tokens < 1.0:
            return _deny(order, RiskReason.RATE_LIMITED, "order submit rate limit reached")
        bucket.tokens -= 1.0
        worker.tokens -= 1.0
        if held_value + notional >= ex.warning_cap:
            warning = _position_warning(order, held_value + notional, ex, equity)
            return RiskDecision(Outcome.APPROVED, None, None, (warning,))
        return _APPROVED

    def _resize_buy(
        self,
        order: OrderIntent,
        ctx: RiskContext,
        ex: ExecutionRisk,
        now: float,
        held_value: Decimal,
    ) -> RiskDecision:
        """A BUY above a capacity limit: shrink it to the tightest one, or deny if too small."""
        price = order.price
        equity = ctx.equity
        reason, allowed = RiskReason.ORDER_VALUE_ABOVE_MAX, self._max_value
        room = ex.max_position * equity - held_value
        if room < allowed:
            reason, allowed = RiskReason.POSITION_LIMIT, room
        # The notional whose reserved cost (worse fill, fees) the cash still covers.
        cash_room = (ctx.cash - self._order_fee) / self._cost_factor
        if cash_room < allowed:
            reason, allowed = RiskReason.INSUFFICIENT_CASH, cash_room
        new_qty = floor_quantity(allowed / price) if allowed > 0 else ZERO
        notional = new_qty * price
        if new_qty <= 0 or notional < self._min_value:
            return _deny(order, reason, _why(reason, allowed, ex, equity))
        if ctx.worker_exposure + notional > self._max_exposure:
            return _exposure_denial(order, ctx.worker_exposure, notional, self._max_exposure)
        user_cap = self.limits.max_user_exposure
        if user_cap is not None and ctx.user_exposure + notional > user_cap:
            return _user_exposure_denial(order, ctx.user_exposure, notional, user_cap)
        if not self._take(ex.bucket, now, forced=False):
            return _deny(order, RiskReason.RATE_LIMITED, "order submit rate limit reached")
        events = [_resized_event(order, new_qty, reason, _why(reason, allowed, ex, equity))]
        if held_value + notional >= ex.warn_position * equity:
            events.append(_position_warning(order, held_value + notional, ex, equity))
        return RiskDecision(Outcome.RESIZED, new_qty, reason, tuple(events))

    def _check_sell(
        self,
        order: OrderIntent,
        ctx: RiskContext,
        ex: ExecutionRisk,
        now: float,
        qty: Decimal,
        price: Decimal,
    ) -> RiskDecision:
        closing = order.purpose in _CLOSING
        if ex.halted and not closing:
            return _deny(
                order, RiskReason.TRADING_HALTED, "trading HALTED: only closing sells pass"
            )
        available = ctx.position_quantity - ctx.pending_sell_quantity
        if available <= 0:
            return _deny(order, RiskReason.NO_POSITION, "nothing held that is not being sold")
        reason: RiskReason | None = None
        new_qty = qty
        if qty > available:
            reason, new_qty = RiskReason.OVERSELL, available
        if not closing:
            if new_qty * price > self._max_value:
                reason = RiskReason.ORDER_VALUE_ABOVE_MAX
                new_qty = floor_quantity(self._max_value / price)
                if new_qty <= 0:  # no whole share fits: the guard cannot resize, it denies
                    return _deny(
                        order,
                        RiskReason.ORDER_VALUE_ABOVE_MAX,
                        f"one share at {price} exceeds the maximum order value {self._max_value}",
                    )
            notional = new_qty * price
            if new_qty <= 0 or (notional < self._min_value and new_qty != available):
                return _deny(
                    order,
                    RiskReason.ORDER_VALUE_BELOW_MIN,
                    f"order value {notional} < minimum {self._min_value}",
                )
        if not self._take(ex.bucket, now, forced=closing):
            return _deny(order, RiskReason.RATE_LIMITED, "order submit rate limit reached")
        if reason is None:
            return _APPROVED
        event = _resized_event(order, new_qty, reason, f"{reason}: {available} sellable")
        return RiskDecision(Outcome.RESIZED, new_qty, reason, (event,))

    def _take(self, bucket: TokenBucket, now: float, *, forced: bool) -> bool:
        """Take a token from the execution's and the worker's bucket, both or neither.

        A forced take (a closing sell) always succeeds and may borrow: closing risk is never
        throttled, but it delays the next ordinary orders.
        """
        worker = self._worker_bucket
        bucket.refill(now)
        worker.refill(now)
        if not forced and (bucket.tokens < 1.0 or worker.tokens < 1.0):
            return False
        bucket.take()
        worker.take()
        return True


def deny(order: OrderIntent, reason: RiskReason, why: str) -> RiskDecision:
    """A DENIED decision with its `ORDER_DENIED` risk event (for checks made outside
    `RiskManager.check`, e.g. the execution's own status)."""
    return _deny(order, reason, why)


def _deny(order: OrderIntent, reason: RiskReason, why: str) -> RiskDecision:
    event = RiskEvent(
        event_type=RiskEventType.ORDER_DENIED,
        severity=Severity.WARNING,
        description=f"{order.side} {order.quantity} {order.symbol} @ {order.price}: {why}",
        action_taken="order denied; not sent",
        symbol=order.symbol,
        details=details(
            client_order_id=order.client_order_id, reason=reason, purpose=order.purpose
        ),
    )
    return RiskDecision(Outcome.DENIED, None, reason, (event,))


def _buy_state_denial(order: OrderIntent, ex: ExecutionRisk) -> RiskDecision | None:
    if ex.halted:
        return _deny(order, RiskReason.TRADING_HALTED, "trading HALTED: daily loss limit")
    if ex.reducing or ex.operator_reducing:
        return _deny(order, RiskReason.TRADING_REDUCING, "trading REDUCING: no buys")
    level = ex.stops.stopped_out.get(order.symbol)
    if level is not None:
        return _deny(
            order,
            RiskReason.REENTRY_BLOCKED,
            f"stopped out; re-entry blocked until the mark is above {level}",
        )
    return None


def _exposure_denial(
    order: OrderIntent, exposure: Decimal, notional: Decimal, limit: Decimal
) -> RiskDecision:
    return _deny(
        order, RiskReason.EXPOSURE_LIMIT, f"fleet exposure {exposure} + {notional} > {limit}"
    )


def _user_exposure_denial(
    order: OrderIntent, exposure: Decimal, notional: Decimal, limit: Decimal
) -> RiskDecision:
    return _deny(
        order, RiskReason.USER_EXPOSURE_LIMIT, f"user exposure {exposure} + {notional} > {limit}"
    )


def _resized_event(order: OrderIntent, new_qty: Decimal, reason: RiskReason, why: str) -> RiskEvent:
    return RiskEvent(
        event_type=RiskEventType.ORDER_RESIZED,
        severity=Severity.WARNING,
        description=f"{order.side} {order.symbol} resized {order.quantity} -> {new_qty}: {why}",
        action_taken=f"order quantity reduced to {new_qty}",
        symbol=order.symbol,
        details=details(
            client_order_id=order.client_order_id,
            reason=reason,
            requested_quantity=order.quantity,
            approved_quantity=new_qty,
        ),
    )


def _position_warning(
    order: OrderIntent, value_after: Decimal, ex: ExecutionRisk, equity: Decimal
) -> RiskEvent:
    limit = ex.max_position * equity
    return RiskEvent(
        event_type=RiskEventType.POSITION_LIMIT_WARNING,
        severity=Severity.WARNING,
        description=(
            f"{order.symbol} position {value_after} reaches "
            f"{ex.limits.position_warning_ratio:%} of its limit {limit}"
        ),
        action_taken="order approved; approaching the position limit",
        symbol=order.symbol,
        details=details(value_after=value_after, limit=limit, equity=equity),
    )


def _why(reason: RiskReason, allowed: Decimal | None, ex: ExecutionRisk, equity: Decimal) -> str:
    if reason is RiskReason.POSITION_LIMIT:
        return f"position limit {ex.max_position} x equity {equity}"
    if reason is RiskReason.INSUFFICIENT_CASH:
        if allowed is None:
            return "cash available"
        return f"cash available for {quantize_cash(allowed)} after the slippage and fee reserve"
    return "maximum order value"
