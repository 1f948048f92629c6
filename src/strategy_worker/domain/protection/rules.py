"""Trigger and level rules of protective orders, shared by the emulator and the paper OMS.

One definition of each rule, so an emulated stop and a native one at the paper venue fire on
the same price at the same level:

- levels are prices, rounded to PRICE_QUANTUM (0.0001) half-even, as every derived price;
- an exit SELL (protecting a long position) triggers when the mark is AT or BELOW its stop
  level; a BUY mirrors it (at or above);
- a take-profit is touched when the mark is at or beyond its level in the position's favour;
- a trailing stop's watermark is the best mark since it was armed (the highest for a SELL,
  the lowest for a BUY); it only ever ratchets toward the price, and the level derived from
  it is monotone in the watermark, so the level never moves against the position;
- a gap is a mark strictly past the level (not a touch): the exit is still released, and
  its reference price is the mark, never the level.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from strategy_worker.domain.money import ZERO, quantize_price
from strategy_worker.domain.orders import OrderPurpose, Side
from strategy_worker.errors import DomainError

ONE = Decimal(1)


class Leg(StrEnum):
    """One kind of protection on a position; its value is the exit order's purpose."""

    STOP_LOSS = "STOP_LOSS"
    TRAILING_STOP = "TRAILING_STOP"
    TAKE_PROFIT = "TAKE_PROFIT"

    @property
    def purpose(self) -> OrderPurpose:
        return OrderPurpose(self.value)

    @property
    def is_stop(self) -> bool:
        """Stops trigger on adverse prices; a take-profit on favourable ones."""
        return self is not Leg.TAKE_PROFIT


#: When two stops are reached by one mark (a gap through both), the one with the HIGHER
#: level wins (a continuous path would have reached it first); at equal levels this order.
LEG_PRIORITY: tuple[Leg, ...] = (Leg.STOP_LOSS, Leg.TRAILING_STOP, Leg.TAKE_PROFIT)


def entry_price(quantity: Decimal, cost_basis: Decimal) -> Decimal:
    """The exact average cost (cost basis / quantity); not rounded."""
    return cost_basis / quantity


def stop_loss_level(quantity: Decimal, cost_basis: Decimal, pct: Decimal) -> Decimal:
    """avg cost x (1 - pct), 0.0001 half-even: the same level as `risk.stop_loss.stop_level`."""
    return quantize_price(cost_basis / quantity * (ONE - pct))


def take_profit_level(quantity: Decimal, cost_basis: Decimal, pct: Decimal) -> Decimal:
    """avg cost x (1 + pct), 0.0001 half-even."""
    return quantize_price(cost_basis / quantity * (ONE + pct))


def ratchet(watermark: Decimal | None, mark: Decimal, side: Side) -> Decimal:
    """The watermark after `mark`: the higher of the two for a SELL, the lower for a BUY."""
    if watermark is None:
        return mark
    if side is Side.SELL:
        return mark if mark > watermark else watermark
    return mark if mark < watermark else watermark


def trail_level(
    watermark: Decimal,
    side: Side,
    *,
    pct: Decimal | None = None,
    amount: Decimal | None = None,
) -> Decimal:
    """A trailing stop's level from its watermark (exactly one of pct and amount).

    SELL: watermark x (1 - pct) or watermark - amount; BUY: x (1 + pct) or + amount; both
    0.0001 half-even. A SELL level at or below zero never triggers (marks are positive).
    """
    sign = -1 if side is Side.SELL else 1
    if pct is not None and amount is None:
        return quantize_price(watermark * (ONE + sign * pct))
    if amount is not None and pct is None:
        return quantize_price(watermark + sign * amount)
    raise DomainError("a trail is by exactly one of pct and amount")


def stop_reached(side: Side, level: Decimal, mark: Decimal) -> bool:
    """A stop of this (exit) side is triggered by `mark`: SELL at or below, BUY at or above."""
    return mark <= level if side is Side.SELL else mark >= level


def limit_reached(side: Side, limit: Decimal, mark: Decimal) -> bool:
    """A LIMIT of this side can fill at `mark`: SELL at or above it, BUY at or below it."""
    return mark >= limit if side is Side.SELL else mark <= limit


def gapped(side: Side, level: Decimal, mark: Decimal) -> bool:
    """The mark jumped strictly past the level rather than touching it."""
    return mark < level if side is Side.SELL else mark > level


def offset_limit(level: Decimal, side: Side, offset: Decimal) -> Decimal:
    """The LIMIT a triggered stop works at: level - offset (SELL) or + offset (BUY)."""
    if offset < ZERO:
        raise DomainError("a limit offset is never negative")
    return quantize_price(level - offset if side is Side.SELL else level + offset)


def offset_amount(level: Decimal, offset_pct: Decimal) -> Decimal:
    """A fractional limit offset as a price distance at `level` (0.0001 half-even)."""
    return quantize_price(level * offset_pct)
