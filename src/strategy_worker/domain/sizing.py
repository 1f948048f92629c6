"""Initial order sizing: capital x effective weight / price, in whole shares, rounded down.

Rules (README.md, "Trading rules", "Initial sizing"):
- effective weight = min(allocation weight, max_position_size after tightening); a weight
  above the limit is capped with a WARNING `ALLOCATION_CAPPED` (the spec's 35% AAPL under a
  30% limit buys 30%, the rest stays in cash) — the strategy is not rejected;
- quantity = the whole shares whose reserved cost (`RiskLimits.reserved_buy_cost`: price
  plus the slippage reserve, fees in bps, a fee per order) fits capital x effective weight:
  never more than the weight allows, and since the weights sum to at most 1, fills within
  the reserve never take cash below zero;
- a symbol whose order would be below `min_order_value` is skipped (INFO `DUST_SKIPPED`);
- an order above `max_order_value` is split into near-equal orders, each <= the maximum
  (INFO `ORDER_SPLIT`): the allocation is the instruction, the maximum a per-order guard;
- when `available_exposure` is given and the plan would exceed it, every target is scaled
  down by the same factor (WARNING `ALLOCATION_SCALED`);
- symbols in sorted order; intent_seq from `first_seq`, consecutive; MARKET orders whose
  reference price is the current price.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.money import ZERO, floor_quantity
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import ApprovedStrategy

ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class SizingPlan:
    """The initial orders (in `intent_seq` order), the events of sizing, and the effective
    target weights the rebalancer must use afterwards."""

    intents: tuple[OrderIntent, ...]
    events: tuple[RiskEvent, ...]
    target_weights: Mapping[str, Decimal] = field(default_factory=dict)
    funded: Decimal = Decimal(1)
    """The fraction of the plan the available exposure funds (1: all of it)."""


def effective_weights(strategy: ApprovedStrategy, limits: RiskLimits) -> dict[str, Decimal]:
    """Allocation weights capped at the (tightened) position limit, by symbol."""
    cap = limits.tightened_by(strategy.config.risk_params).max_position_size
    return {sym: min(w, cap) for sym, w in sorted(strategy.config.allocation.items())}


def split_quantity(quantity: Decimal, price: Decimal, max_value: Decimal) -> list[Decimal]:
    """Split whole shares into near-equal parts each worth <= max_value (empty when a single
    share is worth more than max_value). Larger parts first; deterministic."""
    cap = floor_quantity(max_value / price)
    if cap <= 0 or quantity <= 0:
        return []
    if quantity <= cap:
        return [quantity]
    parts = int((quantity / cap).to_integral_value(rounding=ROUND_CEILING))
    base, extra = divmod(int(quantity), parts)
    return [Decimal(base + 1)] * extra + [Decimal(base)] * (parts - extra)


def reserved_quantity(budget: Decimal, price: Decimal, limits: RiskLimits) -> Decimal:
    """Whole shares at `price` whose orders (split at `max_order_value`), filled within the
    cash reserve, cost at most `budget`, fees included.

    The number of orders is counted for the quantity before the per-order fees are
    reserved; reserving them can only lower the quantity, hence the number of orders.
    """
    quantity = limits.affordable_quantity(budget, price)
    orders = len(split_quantity(quantity, price, limits.max_order_value))
    if orders > 1:
        quantity = limits.affordable_quantity(budget, price, orders)
    return quantity


def market_intent(
    execution_id: uuid.UUID,
    seq: int,
    symbol: str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    purpose: OrderPurpose,
) -> OrderIntent:
    """A MARKET order intent with its deterministic client order id."""
    return OrderIntent(
        client_order_id=client_order_id(execution_id, seq),
        execution_id=execution_id,
        intent_seq=seq,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        quantity=quantity,
        price=price,
        purpose=purpose,
    )


def sized_orders(
    *,
    execution_id: uuid.UUID,
    seq: int,
    symbol: str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    purpose: OrderPurpose,
    limits: RiskLimits,
    events: list[RiskEvent],
) -> list[OrderIntent]:
    """One order, or several when above `max_order_value`; events appended to `events`."""
    parts = split_quantity(quantity, price, limits.max_order_value)
    if not parts:
        events.append(
            _event(
                RiskEventType.PRICE_ABOVE_MAX_ORDER,
                Severity.WARNING,
                symbol,
                f"one share of {symbol} at {price} exceeds the maximum order value",
                "symbol skipped",
                price=price,
                max_order_value=limits.max_order_value,
            )
        )
        return []
    # Only a pathological config (min close to max) can leave a part below the minimum.
    kept = [part for part in parts if part * price >= limits.min_order_value]
    if len(kept) < len(parts):
        events.append(_dust(symbol, quantity - sum(kept, ZERO), price, limits))
    parts = kept
    if len(parts) > 1:
        events.append(
            _event(
                RiskEventType.ORDER_SPLIT,
                Severity.INFO,
                symbol,
                f"{side} {quantity} {symbol} worth {quantity * price} split into "
                f"{len(parts)} orders <= {limits.max_order_value}",
                f"{len(parts)} orders",
                quantity=quantity,
                parts=len(parts),
            )
        )
    return [
        market_intent(execution_id, seq + i, symbol, side, part, price, purpose)
        for i, part in enumerate(parts)
    ]


def plan_initial_orders(
    strategy: ApprovedStrategy,
    prices: Mapping[str, Decimal],
    limits: RiskLimits,
    execution_id: uuid.UUID,
    first_seq: int = 1,
    *,
    available_exposure: Decimal | None = None,
) -> SizingPlan:
    """Size the opening BUY orders of an execution from its capital and allocation.

    `limits` are the worker's; the strategy's risk params tighten them here (idempotent).
    """
    limits = limits.tightened_by(strategy.config.risk_params)
    capital = strategy.config.initial_capital
    cap = limits.max_position_size
    weights = {sym: min(w, cap) for sym, w in sorted(strategy.config.allocation.items())}
    events: list[RiskEvent] = []
    targets: dict[str, Decimal] = {}
    for sym, weight in weights.items():
        requested = strategy.config.allocation[sym]
        if requested > weight:
            events.append(
                _event(
                    RiskEventType.ALLOCATION_CAPPED,
                    Severity.WARNING,
                    sym,
                    f"{sym} allocation {requested} above the position limit {weight}",
                    f"sized at {weight}; the remainder stays in cash",
                    requested_weight=requested,
                    effective_weight=weight,
                )
            )
        price = prices.get(sym)
        if price is None or price <= 0:
            events.append(
                _event(
                    RiskEventType.PRICE_MISSING,
                    Severity.WARNING,
                    sym,
                    f"no price for {sym}",
                    "symbol not bought; the rebalancer buys it once priced",
                )
            )
            continue
        targets[sym] = capital * weight
    total = sum(targets.values(), ZERO)
    factor = Decimal(1)
    if available_exposure is not None and total > available_exposure:
        factor = max(available_exposure, ZERO) / total
        events.append(
            _event(
                RiskEventType.ALLOCATION_SCALED,
                Severity.WARNING,
                None,
                f"plan of {total} exceeds the available exposure {available_exposure}: "
                f"{factor:.2%} of it is funded",
                f"every target scaled by {factor:.6f}",
                planned=total,
                available_exposure=available_exposure,
                funded_fraction=factor,
            )
        )
        targets = {sym: value * factor for sym, value in targets.items()}
    intents: list[OrderIntent] = []
    for sym, value in targets.items():
        price = prices[sym]
        quantity = reserved_quantity(value, price, limits)
        if quantity * price < limits.min_order_value or quantity <= 0:
            events.append(_dust(sym, quantity, price, limits))
            continue
        intents += sized_orders(
            execution_id=execution_id,
            seq=first_seq + len(intents),
            symbol=sym,
            side=Side.BUY,
            quantity=quantity,
            price=price,
            purpose=OrderPurpose.INITIAL,
            limits=limits,
            events=events,
        )
    return SizingPlan(tuple(intents), tuple(events), weights, factor)


def _dust(symbol: str, quantity: Decimal, price: Decimal, limits: RiskLimits) -> RiskEvent:
    return _event(
        RiskEventType.DUST_SKIPPED,
        Severity.INFO,
        symbol,
        f"{symbol}: {quantity} x {price} is below the minimum order value {limits.min_order_value}",
        "order skipped",
        quantity=quantity,
        price=price,
    )


def _event(
    event_type: RiskEventType,
    severity: Severity,
    symbol: str | None,
    description: str,
    action: str,
    **facts: object,
) -> RiskEvent:
    return RiskEvent(
        event_type=event_type,
        severity=severity,
        description=description,
        action_taken=action,
        symbol=symbol,
        details=details(**facts),
    )
