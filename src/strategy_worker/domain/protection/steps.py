"""The decisions of `ProtectionBook.decide`, one guard at a time (pure functions).

`step` settles what the OMS is done with, then either exits a triggered position (waiting
for whatever native leg or exit is still live) or arms it: the emulator always watches, and
native legs are placed, or re-armed (cancel, then place again once terminal), when the
placement and the OMS's capabilities allow and the position is settled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.money import quantize_price
from strategy_worker.domain.orders import OmsCapabilities, OrderIntent, OrderType, Side, Trail
from strategy_worker.domain.protection import events as ev
from strategy_worker.domain.protection import rules
from strategy_worker.domain.protection.rules import LEG_PRIORITY, Leg
from strategy_worker.domain.protection.spec import ProtectionSpec
from strategy_worker.domain.protection.state import Guard, NativeGroup, TrackedOrder, Trigger
from strategy_worker.domain.strategy import ProtectionPlacement

EXIT_SIDE = Side.SELL  # the worker is long-only: every protective exit sells


@dataclass(frozen=True, slots=True)
class Ctx:
    """What every decision reads besides the guard."""

    spec: ProtectionSpec
    capabilities: OmsCapabilities
    #: Why the legs cannot rest at this OMS (None: they can); derived once.
    refusal: str | None = None

    @classmethod
    def of(cls, spec: ProtectionSpec, capabilities: OmsCapabilities) -> Ctx:
        return cls(spec, capabilities, spec.native_refusal(capabilities))


def levels_of(ctx: Ctx, guard: Guard) -> dict[Leg, Decimal]:
    """Every configured leg's level for the guard's position and watermark (cached on the
    guard until one of the three changes; callers never mutate the answer)."""
    key = (guard.quantity, guard.cost_basis, guard.watermark)
    cached = guard.level_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    spec = ctx.spec
    q, cost = guard.quantity, guard.cost_basis
    out: dict[Leg, Decimal] = {}
    if spec.stop_loss_pct is not None:
        out[Leg.STOP_LOSS] = rules.stop_loss_level(q, cost, spec.stop_loss_pct)
    if spec.trailing_stop_pct is not None:
        watermark = guard.watermark
        if watermark is None:
            watermark = quantize_price(rules.entry_price(q, cost))
        out[Leg.TRAILING_STOP] = rules.trail_level(watermark, EXIT_SIDE, pct=spec.trailing_stop_pct)
    if spec.take_profit_pct is not None:
        out[Leg.TAKE_PROFIT] = rules.take_profit_level(q, cost, spec.take_profit_pct)
    guard.level_cache = (key, out)
    return out


def hit(ctx: Ctx, guard: Guard, mark: Decimal) -> tuple[Leg, Decimal] | None:
    levels = levels_of(ctx, guard)
    best: tuple[Leg, Decimal] | None = None
    for leg in LEG_PRIORITY:
        level = levels.get(leg)
        if level is None or not leg.is_stop or not rules.stop_reached(EXIT_SIDE, level, mark):
            continue
        if best is None or level > best[1]:
            best = (leg, level)
    if best is not None:
        return best
    tp = levels.get(Leg.TAKE_PROFIT)
    if tp is not None and rules.limit_reached(EXIT_SIDE, tp, mark):
        return (Leg.TAKE_PROFIT, tp)
    return None


def step(ctx: Ctx, guard: Guard, at: datetime, out: Out) -> None:
    _settle(ctx, guard, at, out)
    native = guard.native
    if guard.quantity <= 0 or not ctx.spec.enabled:
        if native is not None and native.live and not native.cancelling:
            _cancel_native(native, out)
        stale = guard.exit
        if stale is not None and stale.live and guard.quantity <= 0 and not stale.cancelling:
            stale.cancelling = True  # sold by something else: what is left is not ours
            out.cancels.append(stale.client_order_id)
        return
    if guard.trigger is not None:
        _exit(ctx, guard, at, out)
    else:
        _arm(ctx, guard, at, out)


def _settle(ctx: Ctx, guard: Guard, at: datetime, out: Out) -> None:
    """Forget what the OMS is done with: a finished native group, a finished exit."""
    native = guard.native
    if native is not None and not native.live:
        if native.refused:
            guard.native_refused = True
            reasons = ", ".join(sorted({leg.reason for leg in native.legs if leg.reason}))
            why = f"OMS rejected the native legs ({reasons or 'REJECTED'})"
            out.events.append(ev.fallback(guard.symbol, why))
        guard.native = None
    done = guard.exit
    if done is not None and not done.live:
        guard.exit = None
        if done.filled < done.quantity and guard.quantity > 0 and guard.trigger is not None:
            # An exit that sold nothing backs off (an OMS refusing every exit is not to be
            # flooded); one that sold part is followed at once for what is left.
            if done.filled > 0:
                guard.failures = 0
                guard.retry_at = at
            else:
                guard.failures += 1
                base, cap = ctx.spec.retry_base_s, ctx.spec.retry_max_s
                delay = min(base * 2 ** (guard.failures - 1), cap)
                guard.retry_at = at + timedelta(seconds=delay)
            out.events.append(
                ev.exit_failed(
                    guard.symbol,
                    done.client_order_id,
                    done.reason or done.status.value,
                    guard.retry_at,
                )
            )
        else:
            guard.failures = 0
            guard.retry_at = None


def _exit(ctx: Ctx, guard: Guard, at: datetime, out: Out) -> None:
    """A latched trigger: wait for what is live, else release the (next) exit."""
    trigger = guard.trigger
    assert trigger is not None
    if guard.exit is not None:
        return  # live: one exit at a time
    native = guard.native
    if native is not None:
        if native.cancelling or native.executing or trigger.by_oms:
            return  # the OMS is executing it, or confirming the cancel
        waited = (at - trigger.at).total_seconds()
        if waited >= ctx.spec.native_grace_s:
            out.events.append(ev.overdue(guard.symbol, trigger.leg, waited))
            _cancel_native(native, out)
        return
    if not guard.position_fresh or guard.exposed <= 0:
        return
    if guard.retry_at is not None and at < guard.retry_at:
        return
    _release(ctx, guard, trigger, out)


def _release(ctx: Ctx, guard: Guard, trigger: Trigger, out: Out) -> None:
    spec = ctx.spec
    quantity = guard.exposed
    reference = guard.mark if guard.mark is not None else trigger.mark
    leg = trigger.leg
    limit: Decimal | None = None
    if leg.is_stop and spec.limit_offset_pct is not None:
        limit = rules.offset_limit(
            trigger.level,
            EXIT_SIDE,
            rules.offset_amount(trigger.level, spec.limit_offset_pct),
        )
    order_type = OrderType.MARKET if limit is None else OrderType.LIMIT
    guard.exits_released += 1
    intent = out.intent(
        symbol=guard.symbol,
        order_type=order_type,
        quantity=quantity,
        price=reference if limit is None else limit,
        leg=leg,
        limit_price=limit,
    )
    guard.exit = TrackedOrder(
        client_order_id=intent.client_order_id,
        leg=leg,
        quantity=quantity,
        level=trigger.level,
        attempt=guard.exits_released,
    )
    out.events.append(
        ev.exit_released(
            guard.symbol,
            leg,
            client_order_id=intent.client_order_id,
            order_type=order_type,
            quantity=quantity,
            reference_price=intent.price,
            attempt=guard.exits_released,
        )
    )


def _arm(ctx: Ctx, guard: Guard, at: datetime, out: Out) -> None:
    """No trigger: the emulator watches; native legs are placed (or re-armed) if due."""
    native = guard.native
    refusal = _native_refusal(ctx, guard)
    if refusal is not None:
        if native is not None and native.live and not native.cancelling:
            _cancel_native(native, out)  # e.g. the OMS stopped supporting them
        if ctx.spec.placement is ProtectionPlacement.NATIVE and not guard.fallback_noted:
            guard.fallback_noted = True  # `auto` falls back silently, by definition
            out.events.append(ev.fallback(guard.symbol, refusal))
        return
    if guard.exit is not None or guard.buying > 0 or not guard.position_fresh:
        return  # not settled: the emulator covers it meanwhile
    if guard.exposed <= 0:
        return
    levels = levels_of(ctx, guard)
    if native is not None:
        if not native.cancelling and not _matches(ctx, native, guard.exposed, levels):
            _cancel_native(native, out)  # re-arm: placed again once terminal
        return
    _place(ctx, guard, levels, at, out)


def _native_refusal(ctx: Ctx, guard: Guard) -> str | None:
    if guard.native_refused:
        return "the OMS rejected the native legs"
    return ctx.refusal


def _matches(ctx: Ctx, native: NativeGroup, quantity: Decimal, levels: dict[Leg, Decimal]) -> bool:
    if native.quantity != quantity:
        return False
    for leg in native.legs:
        if leg.leg is not Leg.TRAILING_STOP and leg.level != levels.get(leg.leg):
            return False  # the average cost moved the stop-loss or take-profit
    return True


def _place(ctx: Ctx, guard: Guard, levels: dict[Leg, Decimal], at: datetime, out: Out) -> None:
    spec = ctx.spec
    legs = spec.legs
    quantity = guard.exposed
    group_id = f"oco-{out.execution_id.hex}-{out.seq:06d}" if len(legs) > 1 else ""
    tracked: list[TrackedOrder] = []
    for leg in legs:
        level = levels[leg]
        order_type = spec.native_order_type(leg)
        limit: Decimal | None = None
        stop: Decimal | None = None
        trail: Trail | None = None
        offset = (
            None
            if spec.limit_offset_pct is None
            else rules.offset_amount(level, spec.limit_offset_pct)
        )
        if leg is Leg.TAKE_PROFIT:
            limit = level
        elif leg is Leg.TRAILING_STOP:
            trail = Trail(
                pct=spec.trailing_stop_pct,
                limit_offset=offset,
                reference_price=guard.watermark,
            )
        else:
            stop = level
            if offset is not None:
                limit = rules.offset_limit(level, EXIT_SIDE, offset)
        intent = out.intent(
            symbol=guard.symbol,
            order_type=order_type,
            quantity=quantity,
            price=level,
            leg=leg,
            limit_price=limit,
            stop_price=stop,
            trail=trail,
            oco_group_id=group_id,
        )
        tracked.append(
            TrackedOrder(
                client_order_id=intent.client_order_id, leg=leg, quantity=quantity, level=level
            )
        )
    guard.native = NativeGroup(
        group_id=group_id or tracked[0].client_order_id,
        quantity=quantity,
        legs=tracked,
        placed_at=at,
    )
    out.events.append(
        ev.placed(guard.symbol, group_id=guard.native.group_id, legs=legs, quantity=quantity)
    )


def _cancel_native(native: NativeGroup, out: Out) -> None:
    native.cancelling = True
    out.cancels.extend(leg.client_order_id for leg in native.legs if leg.live)


class Out:
    """Collects one decide's intents (numbered), cancels and events."""

    def __init__(self, execution_id: uuid.UUID, next_seq: int) -> None:
        self.execution_id = execution_id
        self.seq = next_seq
        self.intents: list[OrderIntent] = []
        self.cancels: list[str] = []
        self.events: list[ev.ProtectionEvent] = []

    def intent(
        self,
        *,
        symbol: str,
        order_type: OrderType,
        quantity: Decimal,
        price: Decimal,
        leg: Leg,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail: Trail | None = None,
        oco_group_id: str = "",
    ) -> OrderIntent:
        seq = self.seq
        self.seq += 1
        intent = OrderIntent(
            client_order_id=client_order_id(self.execution_id, seq),
            execution_id=self.execution_id,
            intent_seq=seq,
            symbol=symbol,
            side=EXIT_SIDE,
            order_type=order_type,
            quantity=quantity,
            price=price,
            purpose=leg.purpose,
            limit_price=limit_price,
            stop_price=stop_price,
            trail=trail,
            oco_group_id=oco_group_id,
            reduce_only=True,
        )
        self.intents.append(intent)
        return intent


def orders_of(guard: Guard) -> list[TrackedOrder]:
    orders = list(guard.native.legs) if guard.native is not None else []
    if guard.exit is not None:
        orders.append(guard.exit)
    return orders


def find(guard: Guard, client_order_id: str) -> TrackedOrder | None:
    for order in orders_of(guard):
        if order.client_order_id == client_order_id:
            return order
    return None
