"""Rebalance planning: bring every symbol back to its target weight in one batch.

Rules (README.md, "Trading rules", "Rebalancing"):
- weight = market value / equity; drift = max |weight - target| over the symbols considered,
  in weight points (0.05 = 5 percentage points); no plan unless drift > threshold;
- a held symbol without a target has target 0 and is sold entirely; a stopped-out symbol
  (blocked) and a symbol without a price are left alone and kept out of the drift;
- per symbol the order moves toward the target without crossing it: quantity =
  floor(|target x equity - market value| / price), so a batch never increases total drift
  and no buy can take a position above its (capped) target, hence above its limit;
- orders below `min_order_value` are dropped (dust, INFO); orders above `max_order_value`
  are split; sells come first (lower `intent_seq`), then buys;
- the batch is checked as one, within the cash reserve (`RiskLimits.reserved_buy_cost`):
  the buys' reserved cost (worse fills and fees included) never exceeds cash + the sells'
  reserved proceeds (the least they bring) - `cash_reserve` (nor the available worker
  exposure + sell proceeds); if it would, every buy is scaled down by the same factor
  (WARNING `INSUFFICIENT_CASH`). So fills within the reserve never take cash below zero.
The runtime should send the buy leg once the sell leg has filled; `check` guards the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.domain.money import ZERO, floor_quantity
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, Side
from strategy_worker.domain.positions import Valuation
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.sizing import sized_orders, split_quantity

DEFAULT_THRESHOLD = Decimal("0.05")


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    """`intents` sells first then buys, in `intent_seq` order; `drift` before the batch."""

    intents: tuple[OrderIntent, ...]
    events: tuple[RiskEvent, ...]
    drift: Decimal
    triggered: bool

    @property
    def sells(self) -> tuple[OrderIntent, ...]:
        return tuple(i for i in self.intents if i.side is Side.SELL)

    @property
    def buys(self) -> tuple[OrderIntent, ...]:
        return tuple(i for i in self.intents if i.side is Side.BUY)


def current_weights(
    valuation: Valuation, targets: Mapping[str, Decimal], prices: Mapping[str, Decimal]
) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """symbol -> (market value, price, weight) for every held or targeted symbol that has a
    price in `prices` (the current ones): a held symbol without one is left out, whatever
    mark the valuation last knew for it."""
    out: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for sym in sorted(set(targets) | set(valuation.positions)):
        price = prices.get(sym)
        if price is None or price <= 0:
            continue  # no current price: never traded at a stale mark, kept out of the drift
        held = valuation.positions.get(sym)
        if held is None:
            out[sym] = (ZERO, price, ZERO)
            continue
        value = held.quantity * price
        equity = valuation.equity
        out[sym] = (value, price, value / equity if equity > 0 else ZERO)
    return out


def total_drift(weights: Mapping[str, Decimal], targets: Mapping[str, Decimal]) -> Decimal:
    """Sum of |weight - target| over the union of symbols (a missing one counts as 0)."""
    return sum(
        (abs(weights.get(s, ZERO) - targets.get(s, ZERO)) for s in set(weights) | set(targets)),
        ZERO,
    )


def plan_rebalance(
    valuation: Valuation,
    targets: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
    limits: RiskLimits,
    *,
    execution_id: uuid.UUID,
    first_seq: int,
    threshold: Decimal = DEFAULT_THRESHOLD,
    blocked: frozenset[str] = frozenset(),
    available_exposure: Decimal | None = None,
    cash_reserve: Decimal = ZERO,
) -> RebalancePlan:
    """Plan one rebalance batch from a valuation taken at `prices`.

    `targets` are the effective weights (`SizingPlan.target_weights`, already capped);
    `blocked` the stopped-out symbols; `limits` the execution's tightened limits.
    """
    equity = valuation.equity
    rows = {
        sym: row
        for sym, row in current_weights(valuation, targets, prices).items()
        if sym not in blocked
    }
    drift = max((abs(w - targets.get(sym, ZERO)) for sym, (_, _, w) in rows.items()), default=ZERO)
    if drift <= threshold or equity <= 0:
        return RebalancePlan((), (), drift, False)
    events: list[RiskEvent] = [
        RiskEvent(
            event_type=RiskEventType.REBALANCE_TRIGGERED,
            severity=Severity.INFO,
            description=f"drift {drift:.4f} above threshold {threshold}",
            action_taken="rebalance batch planned",
            details=details(drift=drift, threshold=threshold, equity=equity),
        )
    ]
    events += [_blocked(sym) for sym in sorted(blocked & set(targets))]
    sells: list[tuple[str, Decimal, Decimal]] = []
    buys: list[tuple[str, Decimal, Decimal]] = []
    for sym, (value, price, _) in rows.items():
        target = targets.get(sym, ZERO)
        delta = target * equity - value
        held = valuation.positions.get(sym)
        if delta < 0 and held is not None:
            quantity = held.quantity if target <= 0 else floor_quantity(-delta / price)
            if quantity > 0 and (
                quantity * price >= limits.min_order_value or quantity == held.quantity
            ):
                sells.append((sym, quantity, price))
            elif quantity > 0:
                events.append(_dust(sym, Side.SELL, quantity, price))
        elif delta > 0:
            buys.append((sym, delta, price))
    # The least the sells bring and the most the buys take, for fills within the reserve.
    # A move of which one share is above the maximum order value yields no order
    # (sized_orders: PRICE_ABOVE_MAX_ORDER): it brings no proceeds and needs no cash.
    proceeds = least_proceeds = ZERO
    for _, quantity, price in sells:
        if orders := _order_count(quantity, price, limits):
            proceeds += quantity * price
            least_proceeds += limits.reserved_sell_proceeds(quantity * price, orders)
    budget = valuation.cash + least_proceeds - cash_reserve
    if available_exposure is not None:
        budget = min(budget, available_exposure + proceeds)
    fixed = variable = ZERO  # per-order fees, and the part that scales with the quantity
    for _, delta, price in buys:
        quantity = floor_quantity(delta / price)
        if orders := _order_count(quantity, price, limits):
            fixed += limits.fee_reserve_per_order * orders
            variable += quantity * price * limits.buy_cost_factor
    wanted = fixed + variable
    factor = Decimal(1)
    if wanted > budget:
        # Scaling quantities scales the variable part; the order count, hence the fixed
        # part, can only fall: the scaled buys fit the budget.
        factor = max(budget - fixed, ZERO) / variable if variable > 0 else ZERO
        events.append(
            RiskEvent(
                event_type=RiskEventType.INSUFFICIENT_CASH,
                severity=Severity.WARNING,
                description=(
                    f"buys costing up to {wanted} exceed cash + sell proceeds {budget} "
                    "(slippage and fee reserve included)"
                ),
                action_taken=f"every buy scaled by {factor:.6f}",
                details=details(wanted=wanted, budget=budget),
            )
        )
    intents: list[OrderIntent] = []
    for sym, quantity, price in sells:
        intents += _orders(
            execution_id, first_seq + len(intents), sym, Side.SELL, quantity, price, limits, events
        )
    for sym, delta, price in buys:
        # Scale whole-share quantities, not values, so the scaled batch stays within budget.
        quantity = floor_quantity(floor_quantity(delta / price) * factor)
        if quantity <= 0 or quantity * price < limits.min_order_value:
            events.append(_dust(sym, Side.BUY, quantity, price))
            continue
        intents += _orders(
            execution_id, first_seq + len(intents), sym, Side.BUY, quantity, price, limits, events
        )
    return RebalancePlan(tuple(intents), tuple(events), drift, True)


def _order_count(quantity: Decimal, price: Decimal, limits: RiskLimits) -> int:
    """How many orders `quantity` becomes once split at the maximum order value."""
    return len(split_quantity(quantity, price, limits.max_order_value))


def _orders(
    execution_id: uuid.UUID,
    seq: int,
    symbol: str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    limits: RiskLimits,
    events: list[RiskEvent],
) -> list[OrderIntent]:
    return sized_orders(
        execution_id=execution_id,
        seq=seq,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        purpose=OrderPurpose.REBALANCE,
        limits=limits,
        events=events,
    )


def _dust(symbol: str, side: Side, quantity: Decimal, price: Decimal) -> RiskEvent:
    return RiskEvent(
        event_type=RiskEventType.DUST_SKIPPED,
        severity=Severity.INFO,
        description=f"rebalance {side} {quantity} {symbol} @ {price} below the minimum order",
        action_taken="order dropped",
        symbol=symbol,
        details=details(side=side, quantity=quantity, price=price),
    )


def _blocked(symbol: str) -> RiskEvent:
    return RiskEvent(
        event_type=RiskEventType.REENTRY_BLOCKED,
        severity=Severity.INFO,
        description=f"{symbol} is stopped out; not rebalanced until it recovers",
        action_taken="symbol left out of the batch and of the drift",
        symbol=symbol,
    )
