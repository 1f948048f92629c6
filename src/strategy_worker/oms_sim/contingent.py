"""The paper venue's contract-1.1 rules: resting stops, trailing levels, OCO groups, brackets.

Kept beside `venue.py` (which calls it) so the matching core stays small. The rules are the
contract's (docs/oms-contract.md), and the levels and triggers are the very functions the
worker's emulator uses (`domain.protection.rules`), so a native and an emulated stop fire
on the same price:

- a resting stop (STOP, STOP_LIMIT, TRAILING_STOP) is checked on every price tick of its
  symbol and triggers when the price reaches its level; from then on it works as MARKET or
  LIMIT on the same tick (a gap fills at the gapped price, never at the level);
- a trailing stop's watermark starts at the better of `Trail.reference_price` and the price
  at acceptance and ratchets on every tick until it triggers;
- members of one OCO group share one quantity: base - what the whole group has filled,
  where base is the parent's filled quantity for a bracket child, else the order quantity;
- reduce-only orders never fill beyond the execution's net position in the symbol.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderType, Side
from strategy_worker.domain.protection import rules
from strategy_worker.errors import ValidationError

if TYPE_CHECKING:
    from strategy_worker.oms_sim.venue import OrderRequest, SimOrder

ONE = Decimal(1)


def validate_shape(request: OrderRequest, *, native_types: frozenset[OrderType]) -> None:
    """The contract's per-type field rules (ValidationError -> INVALID_ARGUMENT)."""
    kind = request.order_type
    if kind not in native_types:
        raise ValidationError(
            f"order type {kind} is not supported natively by this OMS (see GetCapabilities)"
        )
    stop, limit, trail = request.stop_price, request.limit_price, request.trail
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT):
        if stop is None or stop <= ZERO:
            raise ValidationError(f"a {kind} order needs a positive stop_price")
    elif stop is not None:
        raise ValidationError(f"a {kind} order takes no stop_price")
    if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        if limit is None or limit <= ZERO:
            raise ValidationError(f"a {kind} order needs a positive limit_price")
    elif limit is not None:
        raise ValidationError(f"a {kind} order takes no limit_price")
    if kind is OrderType.TRAILING_STOP:
        if trail is None:
            raise ValidationError("a TRAILING_STOP order needs a trail")
        if trail.pct is not None and not ZERO < trail.pct < ONE:
            raise ValidationError("trail.pct must be in (0, 1)")
        if trail.amount is not None and trail.amount <= ZERO:
            raise ValidationError("trail.amount must be positive")
        if trail.limit_offset is not None and trail.limit_offset < ZERO:
            raise ValidationError("trail.limit_offset must not be negative")
        if trail.reference_price is not None and trail.reference_price <= ZERO:
            raise ValidationError("trail.reference_price must be positive")
    elif trail is not None:
        raise ValidationError(f"a {kind} order takes no trail")


def validate_links(
    request: OrderRequest,
    *,
    contingent: bool,
    parent: OrderRequest | None,
    group: list[OrderRequest],
) -> None:
    """Parent and OCO rules. `parent` is the named parent (held, or earlier in the same group
    submission; None when unknown); `group` the OCO group's members so far."""
    if not (request.parent_client_order_id or request.oco_group_id):
        return
    if not contingent:
        raise ValidationError("contingent orders (parents, OCO groups) are not supported")
    if request.parent_client_order_id:
        if parent is None:
            raise ValidationError(f"unknown parent {request.parent_client_order_id!r}")
        if parent.parent_client_order_id:
            raise ValidationError("a parent may not itself be a child (one level only)")
        if parent.execution_id != request.execution_id or parent.symbol != request.symbol:
            raise ValidationError("a child shares its parent's execution and symbol")
        if parent.quantity != request.quantity:
            raise ValidationError("a child has its parent's quantity (it fills what it fills)")
    for other in group:
        same = (
            other.execution_id == request.execution_id
            and other.symbol == request.symbol
            and other.side == request.side
            and other.quantity == request.quantity
            and other.parent_client_order_id == request.parent_client_order_id
        )
        if not same:
            raise ValidationError(
                f"OCO group {request.oco_group_id!r}: members share execution, symbol, side, "
                "quantity and parent"
            )


def start_trail(order: SimOrder, price: Decimal | None) -> None:
    """A trailing stop's watermark at acceptance: the better of its reference and `price`."""
    trail = order.request.trail
    if order.request.order_type is not OrderType.TRAILING_STOP or trail is None:
        return
    order.watermark = trail.reference_price
    if price is not None:
        order.watermark = rules.ratchet(order.watermark, price, order.request.side)


def stop_level(order: SimOrder) -> Decimal | None:
    """The order's current trigger level (None: not a stop, or a trail without a price yet)."""
    req = order.request
    if req.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
        return req.stop_price
    if req.order_type is OrderType.TRAILING_STOP and req.trail is not None:
        if order.watermark is None:
            return None
        trail = req.trail
        return rules.trail_level(order.watermark, req.side, pct=trail.pct, amount=trail.amount)
    return None


def observe(order: SimOrder, price: Decimal) -> bool:
    """One tick for a resting stop: ratchet a trail, then True when it triggers now."""
    req = order.request
    if order.triggered or not req.order_type.is_resting_stop:
        return False
    if req.order_type is OrderType.TRAILING_STOP:
        order.watermark = rules.ratchet(order.watermark, price, req.side)
    level = stop_level(order)
    if level is None or not rules.stop_reached(req.side, level, price):
        return False
    order.triggered = True
    order.triggered_level = level
    trail = req.trail
    if req.order_type is OrderType.TRAILING_STOP and trail is not None:
        if trail.limit_offset is not None:
            order.working_limit = rules.offset_limit(level, req.side, trail.limit_offset)
    elif req.order_type is OrderType.STOP_LIMIT:
        order.working_limit = req.limit_price
    return True


def working_limit(order: SimOrder) -> Decimal | None:
    """The limit an order fills at now: its LIMIT, a triggered stop-limit's; None = market."""
    req = order.request
    if req.order_type is OrderType.LIMIT:
        return req.limit_price
    return order.working_limit


def reduce_cap(order: SimOrder, net_position: Decimal) -> Decimal | None:
    """What a reduce-only order may still fill given the execution's net position."""
    if not order.request.reduce_only:
        return None
    held = net_position if order.request.side is Side.SELL else -net_position
    return max(held, ZERO)
