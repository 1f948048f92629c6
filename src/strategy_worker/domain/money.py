"""Exact money: one Decimal type and one documented rounding rule per kind of quantity.

Rules (see README, "Trading rules"):
- prices carry at most 4 decimal places (PRICE_QUANTUM), rounded half-even when derived;
  per-share levels (stop levels, average cost) keep 4 significant digits where that is
  finer (below 0.1), so a sub-cent level never rounds to 0 (`quantize_level`);
- cash amounts, fees and P&L carry exact Decimal products of quantity x price; only a cost
  basis released by a partial sell is rounded, to COST_QUANTUM, half-even, and never to
  more than the whole basis (positions.py);
- quantities are whole shares (QTY_QUANTUM), and sizing always rounds them down.
"""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

PRICE_QUANTUM = Decimal("0.0001")
CASH_QUANTUM = Decimal("0.01")
#: Cost released by a partial sell: the price quantum, so sub-cent positions keep their cost.
COST_QUANTUM = PRICE_QUANTUM
#: Below this, a per-share level is rounded to LEVEL_DIGITS significant digits instead.
_LEVEL_FINE_BELOW = Decimal("0.1")
LEVEL_DIGITS = 4
QTY_QUANTUM = Decimal("1")
ZERO = Decimal(0)

# Enough precision that no product of a sane quantity and price is ever rounded.
MONEY_CONTEXT = Context(prec=38)


def to_decimal(value: object) -> Decimal:
    """Convert an int, str or Decimal to a finite Decimal; floats go through their repr.

    A float is accepted only because JSON parsers produce them; repr() keeps the shortest
    decimal that round-trips, so 175.5 becomes Decimal("175.5"), never 175.4999...
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("number must be finite")
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
    else:
        raise TypeError(f"not a number: {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("number must be finite")
    return result


def quantize_price(value: Decimal) -> Decimal:
    """Round a derived price to PRICE_QUANTUM, half-even."""
    return value.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


def quantize_level(value: Decimal) -> Decimal:
    """Round a derived per-share level half-even to PRICE_QUANTUM, or to LEVEL_DIGITS
    significant digits when that is finer (|value| < 0.1): 0.000015 stays 0.00001500."""
    if not value or abs(value) >= _LEVEL_FINE_BELOW:
        return quantize_price(value)
    quantum = Decimal(1).scaleb(value.adjusted() - (LEVEL_DIGITS - 1))
    return value.quantize(quantum, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


def quantize_cash(value: Decimal) -> Decimal:
    """Round a derived cash amount to CASH_QUANTUM (cents), half-even."""
    return value.quantize(CASH_QUANTUM, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


def floor_quantity(value: Decimal) -> Decimal:
    """Round a quantity down to whole shares: sizing never buys more than it can afford."""
    return value.quantize(QTY_QUANTUM, rounding=ROUND_DOWN, context=MONEY_CONTEXT)


def money_str(value: Decimal) -> str:
    """Canonical string form of a Decimal for JSON and protobuf (no exponent)."""
    return format(value, "f")
