from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.clock import ManualClock
from strategy_worker.domain.events import RiskEventType, Severity
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.orders import OrderPurpose, OrderType, Side
from strategy_worker.domain.risk import RiskContext, RiskLimits, RiskManager
from strategy_worker.domain.sizing import plan_initial_orders, split_quantity
from strategy_worker.domain.strategy import ApprovedStrategy, parse_strategy_message

from ._factories import EXECUTION_ID, T0, sample

D = Decimal
PRICES = {"AAPL": D("175.50"), "MSFT": D("380.00"), "GOOGL": D("140.00")}


def strategy(**config: object) -> ApprovedStrategy:
    msg = sample()
    msg["config"].update(config)
    result = parse_strategy_message(msg)
    assert isinstance(result, ApprovedStrategy), result
    return result


def test_spec_sample_caps_35_percent_weights_at_the_30_percent_limit_with_warnings() -> None:
    plan = plan_initial_orders(strategy(), PRICES, RiskLimits(), EXECUTION_ID)
    assert [(i.symbol, i.quantity) for i in plan.intents] == [
        # floor((30000 - $1 fee reserve) / (price x 1.002001)): 10 bps of slippage and
        # 10 bps of fees reserved (214 GOOGL at 140 would leave nothing for them).
        ("AAPL", D(170)),
        ("GOOGL", D(213)),
        ("MSFT", D(78)),
    ]
    capped = [e for e in plan.events if e.event_type == RiskEventType.ALLOCATION_CAPPED]
    assert [e.symbol for e in capped] == ["AAPL", "MSFT"]
    assert all(e.severity is Severity.WARNING for e in capped)
    assert plan.target_weights == {"AAPL": D("0.30"), "GOOGL": D("0.30"), "MSFT": D("0.30")}


def test_intents_are_market_buys_with_deterministic_sequence_and_ids() -> None:
    plan = plan_initial_orders(strategy(), PRICES, RiskLimits(), EXECUTION_ID, first_seq=5)
    again = plan_initial_orders(strategy(), PRICES, RiskLimits(), EXECUTION_ID, first_seq=5)
    assert plan == again
    for offset, order in enumerate(plan.intents):
        assert order.intent_seq == 5 + offset
        assert order.client_order_id == client_order_id(EXECUTION_ID, 5 + offset)
        assert (order.side, order.order_type, order.purpose) == (
            Side.BUY,
            OrderType.MARKET,
            OrderPurpose.INITIAL,
        )
        assert order.price == PRICES[order.symbol]


def test_dust_below_minimum_order_is_skipped_with_info_event() -> None:
    plan = plan_initial_orders(
        strategy(initial_capital=1000), PRICES, RiskLimits(), EXECUTION_ID
    )  # 300 / 380 -> 0 MSFT; 300 / 175.5 -> 1 AAPL = 175.5; 300/140 -> 2 GOOGL = 280
    assert [i.symbol for i in plan.intents] == ["AAPL", "GOOGL"]
    dust = [e for e in plan.events if e.event_type == RiskEventType.DUST_SKIPPED]
    assert [e.symbol for e in dust] == ["MSFT"]
    assert dust[0].severity is Severity.INFO


def test_order_above_max_value_is_split_into_orders_under_the_max() -> None:
    plan = plan_initial_orders(
        strategy(initial_capital=1000000), PRICES, RiskLimits(), EXECUTION_ID
    )
    googl = [i for i in plan.intents if i.symbol == "GOOGL"]
    # floor((300000 - 3 orders x $1) / (140 x 1.002001)); floor(300000 / 140) would be 2142
    assert sum(i.quantity for i in googl) == D(2138)
    assert len(googl) == 3
    assert all(i.notional <= D("100000") for i in googl)
    assert any(e.event_type == RiskEventType.ORDER_SPLIT for e in plan.events)
    assert [i.intent_seq for i in plan.intents] == list(range(1, len(plan.intents) + 1))


def test_split_quantity_is_near_equal_and_never_above_the_cap() -> None:
    assert split_quantity(D(25), D(10), D(100)) == [D(9), D(8), D(8)]
    assert split_quantity(D(5), D(10), D(100)) == [D(5)]
    assert split_quantity(D(5), D(1000), D(100)) == []


def test_symbol_without_price_or_priced_above_max_order_is_skipped_with_warning() -> None:
    prices = {"AAPL": D("175.50"), "GOOGL": D("150000")}
    approved = strategy(initial_capital=1000000)  # 2 GOOGL wanted, one is above the max
    plan = plan_initial_orders(approved, prices, RiskLimits(), EXECUTION_ID)
    assert {i.symbol for i in plan.intents} == {"AAPL"}  # MSFT unpriced, GOOGL too dear
    kinds = {e.event_type for e in plan.events}
    assert {RiskEventType.PRICE_MISSING, RiskEventType.PRICE_ABOVE_MAX_ORDER} <= kinds


def test_plan_larger_than_available_exposure_is_scaled_down() -> None:
    plan = plan_initial_orders(
        strategy(), PRICES, RiskLimits(), EXECUTION_ID, available_exposure=D("45000")
    )
    assert sum(i.notional for i in plan.intents) <= D("45000")
    assert any(e.event_type == RiskEventType.ALLOCATION_SCALED for e in plan.events)


def test_strategy_position_limit_tighter_than_worker_applies() -> None:
    risk = {"max_position_size": 0.10}
    plan = plan_initial_orders(strategy(risk_params=risk), PRICES, RiskLimits(), EXECUTION_ID)
    assert all(i.notional <= D("10000") for i in plan.intents)


def test_spec_sample_initial_orders_all_pass_the_risk_check() -> None:
    limits = RiskLimits()
    manager = RiskManager(limits, ManualClock(T0))
    approved = strategy()
    ex = manager.new_execution(
        EXECUTION_ID, start_equity=D("100000"), risk_params=approved.config.risk_params
    )
    cash, exposure = D("100000"), D("0")
    for order in plan_initial_orders(approved, PRICES, limits, EXECUTION_ID).intents:
        context = RiskContext(execution=ex, equity=D("100000"), cash=cash, worker_exposure=exposure)
        decision = manager.check(order, context)
        assert decision.approved
        assert decision.quantity is None
        assert [e.event_type for e in decision.events] == [RiskEventType.POSITION_LIMIT_WARNING]
        cash -= order.notional
        exposure += order.notional


@settings(max_examples=150, deadline=None)
@given(
    capital=st.decimals(min_value=D("100"), max_value=D("1e9"), places=2),
    weights=st.lists(st.integers(min_value=1, max_value=100), min_size=3, max_size=3),
    prices=st.lists(
        st.decimals(min_value=D("0.01"), max_value=D("200000"), places=4), min_size=3, max_size=3
    ),
)
def test_no_planned_order_breaches_value_position_or_capital_limits(
    capital: Decimal, weights: list[int], prices: list[Decimal]
) -> None:
    total = sum(weights)
    alloc = {s: D(w) / D(total) for s, w in zip(["AAPL", "MSFT", "GOOGL"], weights, strict=True)}
    alloc = {
        s: w.quantize(D("0.0001"), rounding="ROUND_DOWN") or D("0.0001") for s, w in alloc.items()
    }
    approved = strategy(initial_capital=capital, allocation=alloc)
    price_map = dict(zip(["AAPL", "MSFT", "GOOGL"], prices, strict=True))
    limits = RiskLimits()
    plan = plan_initial_orders(approved, price_map, limits, EXECUTION_ID)
    per_symbol: dict[str, Decimal] = {}
    for order in plan.intents:
        assert limits.min_order_value <= order.notional <= limits.max_order_value
        assert order.quantity == order.quantity.to_integral_value()
        assert order.quantity > 0
        per_symbol[order.symbol] = per_symbol.get(order.symbol, D(0)) + order.notional
    assert sum(per_symbol.values(), D(0)) <= capital
    for symbol, value in per_symbol.items():
        assert value <= min(alloc[symbol], D("0.30")) * capital


# --------------------------------------------------------------------------- cash reserve

FOUR = ["AAPL", "AMZN", "GOOGL", "MSFT"]


def _fill_all(
    capital: Decimal, intents: object, slippage_bps: Decimal, fee_bps: Decimal, fee: Decimal
) -> Decimal:
    """Cash after every order fills `slippage_bps` worse than its reference, paying fees of
    `fee_bps` of the filled notional plus `fee` per order (split over two fills)."""
    from strategy_worker.domain.positions import Portfolio

    from ._factories import fill

    book = Portfolio(capital)
    for order in intents:  # type: ignore[attr-defined]
        price = order.price * (1 + slippage_bps / 10_000)
        first = (order.quantity / 2).to_integral_value(rounding="ROUND_DOWN")
        for qty in (first, order.quantity - first):
            if qty:
                notional_fee = qty * price * fee_bps / 10_000
                book.apply_fill(
                    fill(symbol=order.symbol, quantity=qty, price=price, fee=notional_fee + fee / 2)
                )
    return book.cash


def test_fully_allocated_strategy_keeps_cash_when_fills_are_worse_and_charged() -> None:
    # The case: four 25% symbols filled 5 bps worse with a $1 fee ended at cash -54.
    approved = strategy(symbols=FOUR, allocation=dict.fromkeys(FOUR, 0.25), risk_params=None)
    prices = dict.fromkeys(FOUR, D("100"))

    plan = plan_initial_orders(approved, prices, RiskLimits(), EXECUTION_ID)

    cash = _fill_all(D("100000"), plan.intents, D(5), D(0), D(1))
    assert cash >= 0
    assert all(order.quantity == 249 for order in plan.intents)  # 250 left nothing for costs


@settings(max_examples=200, deadline=None)
@given(
    capital=st.decimals(min_value=D("1000"), max_value=D("1e8"), places=2),
    weights=st.lists(st.integers(min_value=1, max_value=100), min_size=4, max_size=4),
    unallocated=st.integers(min_value=0, max_value=30),
    prices=st.lists(
        st.decimals(min_value=D("0.01"), max_value=D("150000"), places=4), min_size=4, max_size=4
    ),
    reserve=st.tuples(
        st.integers(min_value=0, max_value=100),  # slippage reserve, bps
        st.integers(min_value=0, max_value=100),  # fee reserve, bps
        st.decimals(min_value=D("0"), max_value=D("20"), places=2),  # fee reserve per order
    ),
    used=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_cash_never_goes_negative_for_fills_within_the_reserve(
    capital: Decimal,
    weights: list[int],
    unallocated: int,
    prices: list[Decimal],
    reserve: tuple[int, int, Decimal],
    used: tuple[float, float, float],
) -> None:
    # Arrange: random allocations (up to 100%), prices, reserves, and fills that use any
    # part of each reserve (slippage, fee rate and per-order fee).
    total = sum(weights)
    alloc = {
        s: (D(w) * (100 - unallocated) / 100 / total).quantize(D("0.0001"), "ROUND_DOWN")
        or D("0.0001")
        for s, w in zip(FOUR, weights, strict=True)
    }
    limits = RiskLimits(
        max_position_size=D(1),
        slippage_reserve_bps=D(reserve[0]),
        fee_reserve_bps=D(reserve[1]),
        fee_reserve_per_order=reserve[2],
    )
    approved = strategy(symbols=FOUR, allocation=alloc, initial_capital=capital, risk_params=None)
    price_map = dict(zip(FOUR, prices, strict=True))

    # Act
    plan = plan_initial_orders(approved, price_map, limits, EXECUTION_ID)
    cash = _fill_all(
        capital,
        plan.intents,
        D(reserve[0]) * D(str(used[0])),
        D(reserve[1]) * D(str(used[1])),
        reserve[2] * D(str(used[2])),
    )

    # Assert
    assert cash >= 0
