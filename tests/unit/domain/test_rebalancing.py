from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.events import RiskEventType
from strategy_worker.domain.orders import OrderPurpose, Side
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.rebalancing import plan_rebalance, total_drift
from strategy_worker.domain.risk import RiskLimits

from ._factories import EXECUTION_ID, fill

D = Decimal
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN"]


def book(holdings: dict[str, tuple[int, str]], capital: str = "100000") -> Portfolio:
    portfolio = Portfolio(D(capital))
    for symbol, (quantity, price) in holdings.items():
        portfolio.apply_fill(fill(symbol=symbol, quantity=quantity, price=price))
    return portfolio


def plan(portfolio: Portfolio, targets: dict[str, str], prices: dict[str, str], **kw):  # type: ignore[no-untyped-def]
    price_map = {s: D(p) for s, p in prices.items()}
    return plan_rebalance(
        portfolio.valuation(price_map),
        {s: D(t) for s, t in targets.items()},
        price_map,
        RiskLimits(),
        execution_id=EXECUTION_ID,
        first_seq=10,
        **kw,
    )


def test_drift_within_threshold_plans_nothing() -> None:
    portfolio = book({"AAPL": (250, "100"), "MSFT": (250, "100")})
    result = plan(portfolio, {"AAPL": "0.25", "MSFT": "0.25"}, {"AAPL": "110", "MSFT": "100"})
    assert not result.triggered
    assert result.intents == ()
    assert D("0.01") < result.drift < D("0.05")


def test_drift_above_threshold_sells_winner_first_then_buys_laggard_back_to_target() -> None:
    portfolio = book({"AAPL": (250, "100"), "MSFT": (250, "100")})
    result = plan(portfolio, {"AAPL": "0.25", "MSFT": "0.25"}, {"AAPL": "150", "MSFT": "80"})
    # equity = 50000 + 37500 + 20000 = 107500; AAPL target 26875 -> sell floor(10625/150)=70
    assert result.triggered
    assert result.drift > D("0.05")
    sells, buys = result.sells, result.buys
    assert [(o.symbol, o.quantity) for o in sells] == [("AAPL", D(70))]
    assert [(o.symbol, o.quantity) for o in buys] == [("MSFT", D(85))]  # floor(6875 / 80)
    assert [o.intent_seq for o in result.intents] == [10, 11]
    assert all(o.purpose is OrderPurpose.REBALANCE for o in result.intents)
    assert result.events[0].event_type == RiskEventType.REBALANCE_TRIGGERED


def test_held_symbol_without_target_is_sold_entirely() -> None:
    portfolio = book({"AAPL": (100, "100"), "XOM": (1, "50")})
    result = plan(portfolio, {"AAPL": "0.10"}, {"AAPL": "100", "XOM": "50000"})
    xom = [o for o in result.intents if o.symbol == "XOM"]
    assert [(o.side, o.quantity) for o in xom] == [(Side.SELL, D(1))]


def test_blocked_symbol_is_left_out_of_drift_and_orders() -> None:
    portfolio = book({"AAPL": (100, "100")})
    result = plan(
        portfolio,
        {"AAPL": "0.1", "MSFT": "0.3"},
        {"AAPL": "100", "MSFT": "100"},
        blocked=frozenset({"MSFT"}),
    )
    assert not result.triggered
    assert result.intents == ()


def test_dust_moves_are_dropped() -> None:
    portfolio = book({"AAPL": (300, "100"), "MSFT": (2, "50")})
    # equity 100000; MSFT wants 160 - 100 = 60 more: 1 share of 50 < 100 minimum
    result = plan(portfolio, {"AAPL": "0.2", "MSFT": "0.0016"}, {"AAPL": "100", "MSFT": "50"})
    assert [(o.symbol, o.side, o.quantity) for o in result.intents] == [("AAPL", Side.SELL, D(100))]
    dust = [e for e in result.events if e.event_type == RiskEventType.DUST_SKIPPED]
    assert [e.symbol for e in dust] == ["MSFT"]


def test_buys_never_need_more_than_cash_plus_sell_proceeds() -> None:
    portfolio = book({"AAPL": (900, "100")})
    portfolio.apply_fill(fill(symbol="MSFT", quantity=50, price="100"))
    # cash = 100000 - 95000 = 5000; targets want 30% MSFT and 30% GOOGL
    result = plan(
        portfolio,
        {"AAPL": "0.85", "MSFT": "0.3", "GOOGL": "0.3"},
        {"AAPL": "100", "MSFT": "100", "GOOGL": "100"},
    )
    buys = sum((o.notional for o in result.buys), D(0))
    sells = sum((o.notional for o in result.sells), D(0))
    assert buys <= portfolio.cash + sells
    assert any(e.event_type == RiskEventType.INSUFFICIENT_CASH for e in result.events)


targets_st = st.lists(st.integers(min_value=0, max_value=30), min_size=4, max_size=4)
holdings_st = st.lists(st.integers(min_value=0, max_value=400), min_size=4, max_size=4)
prices_st = st.lists(
    st.decimals(min_value=D("1"), max_value=D("400"), places=2), min_size=4, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(holdings_st, prices_st, prices_st, targets_st)
def test_rebalance_batch_never_increases_total_drift_nor_breaches_limits(
    holdings: list[int], cost: list[Decimal], marks: list[Decimal], target_points: list[int]
) -> None:
    portfolio = Portfolio(D("1000000"))
    for symbol, quantity, price in zip(SYMBOLS, holdings, cost, strict=True):
        if quantity:
            portfolio.apply_fill(fill(symbol=symbol, quantity=quantity, price=price))
    prices = dict(zip(SYMBOLS, marks, strict=True))
    targets = {s: D(t) / 100 for s, t in zip(SYMBOLS, target_points, strict=True) if t}
    limits = RiskLimits()
    before = portfolio.valuation(prices)
    result = plan_rebalance(
        before, targets, prices, limits, execution_id=EXECUTION_ID, first_seq=1, threshold=D(0)
    )
    after = Portfolio.from_json(portfolio.to_json())
    for order in result.intents:
        assert order.notional <= limits.max_order_value
        after.apply_fill(
            fill(symbol=order.symbol, side=order.side, quantity=order.quantity, price=order.price)
        )
    valued = after.valuation(prices)
    assert valued.cash >= 0
    assert total_drift(valued.weights, targets) <= total_drift(before.weights, targets)
    for symbol, pos in valued.positions.items():
        bought = any(o.symbol == symbol and o.side is Side.BUY for o in result.intents)
        if bought:
            assert pos.weight <= targets[symbol] <= limits.max_position_size


def test_held_symbol_without_a_current_price_is_never_traded_at_its_stale_mark() -> None:
    # Issue 12 item 8: MSFT was last marked at 100 but has no current price; the old planner
    # sold 200 of it at that stale mark. Only symbols priced now are planned.
    portfolio = book({"AAPL": (300, "100"), "MSFT": (500, "100")})
    stale = portfolio.valuation({"AAPL": D("100"), "MSFT": D("100")})
    result = plan_rebalance(
        stale,
        {"AAPL": D("0.3"), "MSFT": D("0.3")},
        {"AAPL": D("100")},  # MSFT unpriced now
        RiskLimits(),
        execution_id=EXECUTION_ID,
        first_seq=1,
    )
    assert all(i.symbol != "MSFT" for i in result.intents)


def _fill_worse(
    portfolio: Portfolio, orders: object, slippage_bps: Decimal, fee_bps: Decimal, fee: Decimal
) -> None:
    """Fill every order `slippage_bps` worse than its reference (buys above, sells below),
    charging `fee_bps` of the filled notional plus `fee` per order; sells first, as sent."""
    for order in orders:  # type: ignore[attr-defined]
        shift = 1 + slippage_bps / 10_000 if order.side is Side.BUY else 1 - slippage_bps / 10_000
        price = order.price * shift
        charge = order.quantity * price * fee_bps / 10_000 + fee
        portfolio.apply_fill(
            fill(
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                price=price,
                fee=charge,
            )
        )


def test_rebalance_that_spends_all_cash_keeps_cash_when_fills_are_worse_and_charged() -> None:
    # Buys used to be budgeted at exactly cash + sell proceeds at reference prices: here
    # 49,000 AAPL sold pay for 50,000 MSFT with the 1,000 of cash, and fills 5 bps worse
    # with a $1 fee per order left cash at -51.50.
    portfolio = book({"AAPL": (99_000, "1")})
    result = plan(portfolio, {"AAPL": "0.5", "MSFT": "0.5"}, {"AAPL": "1", "MSFT": "1"})

    _fill_worse(portfolio, result.intents, D(5), D(0), D(1))

    assert portfolio.cash >= 0
    assert [(o.side, o.symbol) for o in result.intents] == [
        (Side.SELL, "AAPL"),
        (Side.BUY, "MSFT"),
    ]


# Cheap shares in large lots: whole-share rounding leaves too little slack to hide a
# budget that forgets slippage and fees.
lots_st = st.lists(st.integers(min_value=0, max_value=200_000), min_size=4, max_size=4)
cheap_st = st.lists(
    st.decimals(min_value=D("0.5"), max_value=D("5"), places=2), min_size=4, max_size=4
)


@settings(max_examples=200, deadline=None)
@given(
    lots_st,
    cheap_st,
    cheap_st,
    st.lists(st.integers(min_value=0, max_value=100), min_size=4, max_size=4),
    st.integers(min_value=0, max_value=100),
    st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_rebalance_fills_within_the_reserve_never_take_cash_below_zero(
    holdings: list[int],
    cost: list[Decimal],
    marks: list[Decimal],
    target_points: list[int],
    spare_cash: int,
    used: tuple[float, float, float],
) -> None:
    # Arrange: a fully invested portfolio, random targets summing to 100% (so the buys
    # need every dollar), and fills using any part of the default reserve (10 bps of
    # slippage, 10 bps of fees, $1 per order).
    portfolio = Portfolio(sum((D(q) * p for q, p in zip(holdings, cost, strict=True)), D(1)))
    for symbol, quantity, price in zip(SYMBOLS, holdings, cost, strict=True):
        if quantity:
            portfolio.apply_fill(fill(symbol=symbol, quantity=quantity, price=price))
    portfolio.cash += spare_cash
    portfolio.initial_capital += spare_cash
    points = sum(target_points) or 1
    targets = {
        s: (D(t) / points).quantize(D("0.0001"), "ROUND_DOWN")
        for s, t in zip(SYMBOLS, target_points, strict=True)
        if t
    }
    prices = dict(zip(SYMBOLS, marks, strict=True))
    limits = RiskLimits(min_order_value=D(1), max_position_size=D(1))

    # Act
    result = plan_rebalance(
        portfolio.valuation(prices),
        targets,
        prices,
        limits,
        execution_id=EXECUTION_ID,
        first_seq=1,
        threshold=D(0),
    )
    _fill_worse(
        portfolio,
        result.intents,
        limits.slippage_reserve_bps * D(str(used[0])),
        limits.fee_reserve_bps * D(str(used[1])),
        limits.fee_reserve_per_order * D(str(used[2])),
    )

    # Assert
    assert portfolio.cash >= 0
