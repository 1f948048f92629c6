"""Performance figures: exact return and drawdown, empyrical's ratios on the documented
returns, and per-symbol P&L that adds up to the books."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import empyrical
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategy_worker.api.performance import (
    EquityPoint,
    max_drawdown,
    performance,
    periodic_returns,
    symbol_contributions,
)
from strategy_worker.domain.orders import Fill, Side
from strategy_worker.domain.positions import Portfolio

T0 = datetime(2026, 1, 5, tzinfo=UTC)
CAPITAL = Decimal("100000")


def fill(n: int, symbol: str, side: Side, qty: str, price: str, fee: str = "0") -> Fill:
    return Fill(
        fill_id=f"f{n}",
        client_order_id=f"o{n}",
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        price=Decimal(price),
        fee=Decimal(fee),
        filled_at=T0 + timedelta(minutes=n),
    )


def test_max_drawdown_is_the_largest_fall_from_a_peak_exactly() -> None:
    equities = [Decimal(v) for v in ("101000", "99990", "103000", "100940", "104000")]

    # 103000 -> 100940 is -2.0%; 101000 -> 99990 is -1.0%.
    assert max_drawdown(CAPITAL, equities) == Decimal("-0.0200000000")
    assert max_drawdown(CAPITAL, [CAPITAL, Decimal("100001")]) == 0


def test_daily_returns_once_the_curve_spans_three_days_with_252_day_annualization() -> None:
    curve = [
        EquityPoint(T0 + timedelta(days=d, hours=h), CAPITAL + d * 100 + h)
        for d in range(4)
        for h in (1, 5)
    ]

    returns, factor, basis = periodic_returns(CAPITAL, curve)
    result = performance(
        initial=CAPITAL, final_equity=curve[-1].equity, curve=curve, fills=[], marks={}
    )

    assert (basis, factor, len(returns)) == ("daily", 252.0, 4)
    assert returns[0] == pytest.approx(float(Decimal("100005") / CAPITAL - 1))
    expected = empyrical.sharpe_ratio(np.asarray(returns), annualization=252)
    assert float(result["sharpe"]) == pytest.approx(expected, rel=1e-5)  # type: ignore[arg-type]


def test_intraday_curves_use_snapshot_returns_annualized_by_their_spacing() -> None:
    curve = [EquityPoint(T0 + timedelta(minutes=m), CAPITAL + m) for m in range(1, 6)]

    _, factor, basis = periodic_returns(CAPITAL, curve)

    assert basis == "snapshots"
    assert factor == 365 * 24 * 60


def test_per_symbol_pnl_sums_to_the_portfolios_books() -> None:
    fills = [
        fill(1, "AAPL", Side.BUY, "100", "175.50", "1.00"),
        fill(2, "MSFT", Side.BUY, "10", "410.20"),
        fill(3, "AAPL", Side.SELL, "40", "180.00", "0.50"),
    ]
    marks = {"AAPL": Decimal("170.00"), "MSFT": Decimal("400.00")}

    rows, clean = symbol_contributions(CAPITAL, fills, marks)
    book = Portfolio(CAPITAL)
    for f in fills:
        book.apply_fill(f)
    valuation = book.valuation(marks)

    assert clean
    by = {r["symbol"]: r for r in rows}
    assert by["AAPL"]["realized_pnl"] == Decimal("180.00")  # 40 x (180.00 - 175.50)
    assert sum(r["total_pnl"] for r in rows) == valuation.total_pnl  # type: ignore[misc]
    assert sum(r["share_of_total"] for r in rows) == pytest.approx(Decimal(1))  # type: ignore[misc]


def test_a_fill_the_books_cannot_take_is_reported_not_raised() -> None:
    rows, clean = symbol_contributions(CAPITAL, [fill(1, "AAPL", Side.SELL, "1", "10")], {})

    assert (rows, clean) == ([], False)


@given(st.lists(st.decimals(min_value=50_000, max_value=150_000, places=2), max_size=30))
def test_drawdown_is_never_positive_and_never_below_minus_one(values: list[Decimal]) -> None:
    assert Decimal(-1) <= max_drawdown(CAPITAL, values) <= 0
