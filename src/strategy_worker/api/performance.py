"""Performance figures of one execution, from its equity snapshots and its fills (pure).

- Return and maximum drawdown are exact (Decimal) over the equity curve, which starts at the
  initial capital.
- Sharpe and Sortino come from empyrical-reloaded on periodic returns: daily (the last
  equity of each UTC day, annualized over 252 days) when the curve spans at least three
  days, else the returns between snapshots, annualized by their median spacing over a
  calendar year. Ratios are floats by nature (not money) and are rounded to 6 places.
- Per-symbol P&L contribution replays the fills through the domain's own `Portfolio`
  (weighted-average cost, the Trading rules), so it agrees with the execution's books:
  realized, fees and unrealized at the given marks, per symbol.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import empyrical
import numpy as np

from strategy_worker.domain.orders import Fill
from strategy_worker.domain.positions import Portfolio
from strategy_worker.errors import DomainError

ZERO = Decimal(0)
RATIO_PLACES = Decimal("0.0000000001")
TRADING_DAYS = 252
YEAR_S = 365 * 86_400


@dataclass(frozen=True, slots=True)
class EquityPoint:
    at: datetime
    equity: Decimal


def total_return(initial: Decimal, final: Decimal) -> Decimal:
    return ((final - initial) / initial).quantize(RATIO_PLACES)


def max_drawdown(initial: Decimal, equities: Sequence[Decimal]) -> Decimal:
    """Largest peak-to-trough fall as a fraction of the peak (0 or negative), exact."""
    peak, worst = initial, ZERO
    for equity in equities:
        peak = max(peak, equity)
        if peak > 0:
            worst = min(worst, (equity - peak) / peak)
    return worst.quantize(RATIO_PLACES)


def periodic_returns(
    initial: Decimal, curve: Sequence[EquityPoint]
) -> tuple[list[float], float, str]:
    """(returns, annualization factor, basis) as described in the module docstring."""
    if not curve:
        return [], float(TRADING_DAYS), "daily"
    days: dict[object, Decimal] = {}
    for point in curve:
        days[point.at.date()] = point.equity
    if len(days) >= 3:
        values = [initial, *days.values()]
        factor, basis = float(TRADING_DAYS), "daily"
    else:
        values = [initial, *(p.equity for p in curve)]
        gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(curve)]
        positive = [g for g in gaps if g > 0]
        factor = YEAR_S / statistics.median(positive) if positive else float(TRADING_DAYS)
        basis = "snapshots"
    returns = [float(b / a - 1) for a, b in itertools.pairwise(values) if a > 0]
    return returns, factor, basis


def _ratio(value: float) -> Decimal | None:
    if value is None or not math.isfinite(value):
        return None
    return Decimal(repr(round(float(value), 6)))


def risk_ratios(initial: Decimal, curve: Sequence[EquityPoint]) -> dict[str, object]:
    returns, factor, basis = periodic_returns(initial, curve)
    sharpe = sortino = None
    if len(returns) >= 2:
        series = np.asarray(returns, dtype=float)
        with np.errstate(all="ignore"):
            sharpe = _ratio(empyrical.sharpe_ratio(series, annualization=factor))
            sortino = _ratio(empyrical.sortino_ratio(series, annualization=factor))
    return {
        "sharpe": sharpe,
        "sortino": sortino,
        "returns_basis": basis,
        "periods": len(returns),
        "annualization": _ratio(factor),
    }


def symbol_contributions(
    initial: Decimal, fills: Sequence[Fill], marks: Mapping[str, Decimal]
) -> tuple[list[dict[str, object]], bool]:
    """Per-symbol realized, fees, unrealized and total P&L (sorted by symbol), and whether
    the fills replayed cleanly (False: a fill the books could not take, e.g. an oversell)."""
    book = Portfolio(initial)
    realized: dict[str, Decimal] = {}
    fees: dict[str, Decimal] = {}
    clean = True
    for fill in fills:
        try:
            applied = book.apply_fill(fill)
        except DomainError:
            clean = False
            continue
        realized[fill.symbol] = realized.get(fill.symbol, ZERO) + applied.realized_pnl
        fees[fill.symbol] = fees.get(fill.symbol, ZERO) + fill.fee
    out: list[dict[str, object]] = []
    grand = ZERO
    rows: list[tuple[str, Decimal, Decimal, Decimal, Decimal, Decimal]] = []
    for symbol in sorted(realized):
        pos = book.positions.get(symbol)
        quantity = pos.quantity if pos else ZERO
        mark = marks.get(symbol, pos.last_price if pos else ZERO)
        unrealized = quantity * mark - pos.cost_basis if pos else ZERO
        total = realized[symbol] + unrealized - fees[symbol]
        grand += total
        rows.append((symbol, quantity, realized[symbol], fees[symbol], unrealized, total))
    for symbol, quantity, real, fee, unreal, total in rows:
        out.append(
            {
                "symbol": symbol,
                "quantity": quantity,
                "realized_pnl": real,
                "fees": fee,
                "unrealized_pnl": unreal,
                "total_pnl": total,
                "share_of_total": (total / grand).quantize(RATIO_PLACES) if grand else None,
            }
        )
    return out, clean


def performance(
    *,
    initial: Decimal,
    final_equity: Decimal,
    curve: Sequence[EquityPoint],
    fills: Sequence[Fill],
    marks: Mapping[str, Decimal],
) -> dict[str, object]:
    """Every figure of the `/performance` endpoint."""
    contributions, clean = symbol_contributions(initial, fills, marks)
    return {
        "initial_capital": initial,
        "equity": final_equity,
        "total_return": total_return(initial, final_equity),
        "max_drawdown": max_drawdown(initial, [*(p.equity for p in curve), final_equity]),
        **risk_ratios(initial, curve),
        "by_symbol": contributions,
        "fills_replayed_cleanly": clean,
    }
