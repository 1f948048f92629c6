from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from strategy_worker.domain.clock import ManualClock
from strategy_worker.domain.events import DailyLossLimitReached, RiskEventType, Severity
from strategy_worker.domain.orders import OrderPurpose, Side
from strategy_worker.domain.risk import (
    APPROVED,
    Outcome,
    RiskContext,
    RiskLimits,
    RiskManager,
    RiskReason,
)
from strategy_worker.domain.risk.state import ExecutionRisk

from .._factories import EXECUTION_ID, T0, intent

D = Decimal


def setup(**overrides: object) -> tuple[RiskManager, ExecutionRisk, ManualClock]:
    clock = ManualClock(T0)
    manager = RiskManager(RiskLimits(**overrides), clock)  # type: ignore[arg-type]
    return manager, manager.new_execution(EXECUTION_ID, start_equity=D("100000")), clock


def ctx(ex: ExecutionRisk, **kw: Decimal) -> RiskContext:
    values = {"equity": D("100000"), "cash": D("100000"), **kw}
    return RiskContext(execution=ex, **values)  # type: ignore[arg-type]


def test_ordinary_order_returns_the_shared_approved_singleton() -> None:
    manager, ex, _ = setup()
    decision = manager.check(intent(quantity=10, price="100"), ctx(ex))
    assert decision is APPROVED
    assert decision.approved
    assert decision.events == ()


def test_order_below_minimum_value_is_denied_with_an_event() -> None:
    manager, ex, _ = setup()
    decision = manager.check(intent(quantity=1, price="99.99"), ctx(ex))
    assert decision.outcome is Outcome.DENIED
    assert decision.reason is RiskReason.ORDER_VALUE_BELOW_MIN
    assert decision.events[0].event_type == RiskEventType.ORDER_DENIED
    denied = decision.to_event(intent(quantity=1, price="99.99"))
    assert denied is not None
    assert denied.reason == "ORDER_VALUE_BELOW_MIN"


def test_buy_above_maximum_value_is_resized_down_to_it() -> None:
    manager, ex, _ = setup()
    context = ctx(ex, equity=D("1000000"), cash=D("1000000"))
    decision = manager.check(intent(quantity=1500, price="100"), context)
    assert decision.outcome is Outcome.RESIZED
    assert decision.quantity == D(1000)
    assert decision.reason is RiskReason.ORDER_VALUE_ABOVE_MAX


def test_buy_beyond_position_limit_is_resized_to_the_limit_with_warnings() -> None:
    manager, ex, _ = setup()
    order = intent(quantity=350, price="100")  # 35% of 100k
    decision = manager.check(order, ctx(ex))
    assert decision.outcome is Outcome.RESIZED
    assert decision.quantity == D(300)
    assert decision.reason is RiskReason.POSITION_LIMIT
    types = [e.event_type for e in decision.events]
    assert types == [RiskEventType.ORDER_RESIZED, RiskEventType.POSITION_LIMIT_WARNING]
    resized = decision.to_event(order)
    assert resized is not None
    assert resized.approved_quantity == D(300)


def test_position_limit_counts_held_and_in_flight_buys() -> None:
    manager, ex, _ = setup()
    context = ctx(ex, position_quantity=D(200), pending_buy_quantity=D(90))
    decision = manager.check(intent(quantity=50, price="100"), context)
    assert decision.quantity == D(10)


def test_buy_reaching_80_percent_of_position_limit_is_approved_with_a_warning() -> None:
    manager, ex, _ = setup()
    decision = manager.check(intent(quantity=240, price="100"), ctx(ex))
    assert decision.outcome is Outcome.APPROVED
    assert decision.events[0].event_type == RiskEventType.POSITION_LIMIT_WARNING
    assert decision.events[0].severity is Severity.WARNING
    assert manager.check(intent(quantity=239, price="100"), ctx(ex)) is APPROVED


def test_buy_needing_more_cash_than_available_is_resized_to_cash() -> None:
    manager, ex, _ = setup()
    decision = manager.check(intent(quantity=100, price="100"), ctx(ex, cash=D("5050")))
    assert decision.quantity == D(50)
    assert decision.reason is RiskReason.INSUFFICIENT_CASH


def test_order_pushing_worker_exposure_over_max_is_denied() -> None:
    manager, ex, _ = setup()
    context = ctx(ex, worker_exposure=D("995000"))
    decision = manager.check(intent(quantity=100, price="100"), context)
    assert decision.reason is RiskReason.EXPOSURE_LIMIT
    assert not decision.approved
    assert manager.check(intent(quantity=50, price="100"), context) is APPROVED


def test_sell_more_than_held_is_resized_to_what_is_not_already_being_sold() -> None:
    manager, ex, _ = setup()
    context = ctx(ex, position_quantity=D(100), pending_sell_quantity=D(30))
    decision = manager.check(intent(side=Side.SELL, quantity=100, price="100"), context)
    assert decision.quantity == D(70)
    assert decision.reason is RiskReason.OVERSELL
    none_left = ctx(ex, position_quantity=D(30), pending_sell_quantity=D(30))
    denied = manager.check(intent(side=Side.SELL, quantity=1, price="100"), none_left)
    assert denied.reason is RiskReason.NO_POSITION


def test_small_sell_closing_the_whole_position_passes_below_minimum_value() -> None:
    manager, ex, _ = setup()
    context = ctx(ex, position_quantity=D(1))
    assert manager.check(intent(side=Side.SELL, quantity=1, price="50"), context) is APPROVED
    partial = ctx(ex, position_quantity=D(5))
    denied = manager.check(intent(side=Side.SELL, quantity=1, price="50"), partial)
    assert denied.reason is RiskReason.ORDER_VALUE_BELOW_MIN


def test_stop_loss_sell_is_exempt_from_the_maximum_order_value() -> None:
    manager, ex, _ = setup()
    context = ctx(ex, position_quantity=D(5000))
    order = intent(side=Side.SELL, quantity=5000, price="100", purpose=OrderPurpose.STOP_LOSS)
    assert manager.check(order, context) is APPROVED
    rebalance = intent(side=Side.SELL, quantity=5000, price="100", purpose=OrderPurpose.REBALANCE)
    assert manager.check(rebalance, context).quantity == D(1000)


def test_one_share_sell_worth_more_than_the_maximum_is_denied_as_above_the_maximum() -> None:
    # A non-closing sell cannot be resized below one share: the fat-finger guard denies it
    # for what it is (above the maximum), as sizing skips such a symbol (PRICE_ABOVE_MAX_ORDER).
    # CLOSE and STOP_LOSS sells stay exempt, so the position can always be closed.
    manager, ex, _ = setup()
    context = ctx(ex, position_quantity=D(3))
    order = intent(side=Side.SELL, quantity=1, price="150000", purpose=OrderPurpose.REBALANCE)

    decision = manager.check(order, context)

    assert decision.outcome is Outcome.DENIED
    assert decision.reason is RiskReason.ORDER_VALUE_ABOVE_MAX
    assert "150000" in decision.events[0].description
    closing = intent(side=Side.SELL, quantity=3, price="150000", purpose=OrderPurpose.CLOSE)
    assert manager.check(closing, context) is APPROVED


def test_buy_worth_all_the_cash_is_resized_to_leave_the_slippage_and_fee_reserve() -> None:
    # A buy of exactly the cash passed, and a fill 5 bps worse with a $1 fee took cash
    # below zero. The cash check budgets the most the order can cost within the reserve.
    manager, ex, _ = setup()
    order = intent(quantity=100, price="100")

    decision = manager.check(order, ctx(ex, cash=D("10000")))

    assert decision.outcome is Outcome.RESIZED
    assert decision.reason is RiskReason.INSUFFICIENT_CASH
    assert decision.quantity == D(99)  # floor((10000 - 1) / (100 x 1.002001))
    assert manager.limits.reserved_buy_cost(D(99) * 100) <= D("10000")


def test_zero_reserve_lets_a_buy_spend_exactly_the_cash() -> None:
    manager, ex, _ = setup(
        slippage_reserve_bps=D(0), fee_reserve_bps=D(0), fee_reserve_per_order=D(0)
    )

    decision = manager.check(intent(quantity=100, price="100"), ctx(ex, cash=D("10000")))

    assert decision.outcome is Outcome.APPROVED


def test_invalid_quantity_or_price_is_denied_not_raised() -> None:
    manager, ex, _ = setup()
    assert manager.check(intent(quantity=0), ctx(ex)).reason is RiskReason.INVALID_ORDER
    assert manager.check(intent(price="-1"), ctx(ex)).reason is RiskReason.INVALID_ORDER


def test_rate_limit_denies_beyond_burst_and_recovers_with_time() -> None:
    manager, ex, clock = setup(execution_orders_per_second=1.0, execution_order_burst=3)
    order = intent(quantity=10, price="100")
    assert [manager.check(order, ctx(ex)).approved for _ in range(4)] == [True] * 3 + [False]
    assert manager.check(order, ctx(ex)).reason is RiskReason.RATE_LIMITED
    clock.advance(1.0)
    assert manager.check(order, ctx(ex)) is APPROVED


def test_worker_rate_limit_spans_executions() -> None:
    manager, ex, _ = setup(worker_orders_per_second=1.0, worker_order_burst=2)
    other = manager.new_execution(EXECUTION_ID, start_equity=D("100000"))
    order = intent(quantity=10, price="100")
    assert manager.check(order, ctx(ex)).approved
    assert manager.check(order, ctx(other)).approved
    assert manager.check(order, ctx(ex)).reason is RiskReason.RATE_LIMITED


def test_stop_loss_is_never_throttled_by_the_rate_limit() -> None:
    manager, ex, _ = setup(execution_orders_per_second=1.0, execution_order_burst=1)
    manager.check(intent(quantity=10, price="100"), ctx(ex))
    stop = intent(side=Side.SELL, quantity=10, price="100", purpose=OrderPurpose.STOP_LOSS)
    assert manager.check(stop, ctx(ex, position_quantity=D(10))) is APPROVED


@pytest.mark.parametrize("purpose", [OrderPurpose.TAKE_PROFIT, OrderPurpose.TRAILING_STOP])
def test_protective_exits_pass_like_stop_losses_when_halted_throttled_or_large(
    purpose: OrderPurpose,
) -> None:
    manager, ex, _ = setup(execution_orders_per_second=1.0, execution_order_burst=1)
    manager.check(intent(quantity=10, price="100"), ctx(ex))  # empties the bucket
    halted = ctx(ex, equity=D("95000"), position_quantity=D(5000))
    exit_all = intent(side=Side.SELL, quantity=5000, price="100", purpose=purpose)

    assert manager.check(exit_all, halted) is APPROVED


def test_daily_loss_reached_at_check_halts_and_denies_buys_but_passes_closes() -> None:
    manager, ex, _ = setup()
    lossy = ctx(ex, equity=D("95000"))  # 5% of 100k = 5000 <= 50k
    decision = manager.check(intent(quantity=10, price="100"), lossy)
    assert decision.reason is RiskReason.TRADING_HALTED
    assert any(isinstance(e, DailyLossLimitReached) for e in ex.take_events())
    rebalance_sell = intent(side=Side.SELL, quantity=5, price="100", purpose=OrderPurpose.REBALANCE)
    held = ctx(ex, equity=D("95000"), position_quantity=D(10))
    assert manager.check(rebalance_sell, held).reason is RiskReason.TRADING_HALTED
    close = intent(side=Side.SELL, quantity=10, price="100", purpose=OrderPurpose.CLOSE)
    assert manager.check(close, held) is APPROVED


def test_reducing_state_passes_sells_and_denies_buys() -> None:
    manager, ex, _ = setup()
    ex.enter_reducing("reconciliation mismatch")
    assert manager.check(intent(), ctx(ex)).reason is RiskReason.TRADING_REDUCING
    sell = intent(side=Side.SELL, quantity=5, price="100", purpose=OrderPurpose.REBALANCE)
    assert manager.check(sell, ctx(ex, position_quantity=D(10))) is APPROVED


def test_stopped_out_symbol_cannot_be_bought_back() -> None:
    manager, ex, _ = setup()
    ex.stops.stopped_out["AAPL"] = D("96.9")
    assert manager.check(intent(), ctx(ex)).reason is RiskReason.REENTRY_BLOCKED
    assert manager.check(intent(symbol="MSFT"), ctx(ex)) is APPROVED


def test_strategy_risk_params_tighten_the_execution_position_limit() -> None:
    manager, _, _ = setup()
    from strategy_worker.domain.strategy import StrategyRiskParams

    ex = manager.new_execution(
        EXECUTION_ID,
        start_equity=D("100000"),
        risk_params=StrategyRiskParams(max_position_size=D("0.10")),
    )
    assert manager.check(intent(quantity=200, price="100"), ctx(ex)).quantity == D(100)


# -------------------------------------------------------------------- property: no breach

money = st.decimals(min_value=D("0.01"), max_value=D("2000000"), places=2)
quantities = st.one_of(
    st.just(0), st.integers(0, 50), st.integers(0, 2000), st.integers(0, 50000)
).map(D)


@settings(max_examples=400, deadline=None)
@given(
    side=st.sampled_from(list(Side)),
    purpose=st.sampled_from(list(OrderPurpose)),
    quantity=quantities,
    price=st.decimals(min_value=D("0.01"), max_value=D("5000"), places=4),
    equity=money,
    cash=money,
    held=quantities,
    pending_buy=quantities,
    pending_sell=quantities,
    exposure=money,
    halted=st.sampled_from([False, False, False, True]),
    reducing=st.sampled_from([False, False, False, True]),
    min_value=st.decimals(min_value=D("1"), max_value=D("1000"), places=2),
    max_value=st.decimals(min_value=D("1000"), max_value=D("200000"), places=2),
    max_position=st.decimals(min_value=D("0.01"), max_value=D("1"), places=2),
)
def test_no_approved_order_ever_breaches_any_limit(
    side: Side,
    purpose: OrderPurpose,
    quantity: Decimal,
    price: Decimal,
    equity: Decimal,
    cash: Decimal,
    held: Decimal,
    pending_buy: Decimal,
    pending_sell: Decimal,
    exposure: Decimal,
    halted: bool,
    reducing: bool,
    min_value: Decimal,
    max_value: Decimal,
    max_position: Decimal,
) -> None:
    limits = dict(min_order_value=min_value, max_order_value=max_value)
    manager, _, _ = setup(max_position_size=max_position, **limits)
    ex = manager.new_execution(EXECUTION_ID, start_equity=equity)  # no daily loss yet
    if halted:
        ex.halt(equity)
    if reducing:
        ex.enter_reducing("test")
    pending_sell = min(pending_sell, held)
    context = RiskContext(
        execution=ex,
        equity=equity,
        cash=cash,
        position_quantity=held,
        pending_buy_quantity=pending_buy,
        pending_sell_quantity=pending_sell,
        worker_exposure=exposure,
    )
    order = intent(side=side, quantity=quantity, price=price, purpose=purpose)
    decision = manager.check(order, context)
    event(f"{side} {decision.outcome} {decision.reason}")
    if not decision.approved:
        assert decision.reason is not None
        assert decision.events
        return
    qty = decision.quantity_for(order)
    value = qty * price
    assert 0 < qty <= quantity
    assert qty == qty.to_integral_value()
    closing = purpose in (
        OrderPurpose.CLOSE,
        OrderPurpose.STOP_LOSS,
        OrderPurpose.TAKE_PROFIT,
        OrderPurpose.TRAILING_STOP,
        OrderPurpose.EXIT,  # an exit rule's close (docs/signals.md)
    )
    if side is Side.BUY:
        assert not halted
        assert not reducing
        assert min_value <= value <= max_value
        assert (held + pending_buy) * price + value <= max_position * equity
        assert manager.limits.reserved_buy_cost(value) <= cash  # worse fills and fees too
        assert exposure + value <= manager.limits.max_total_exposure
    else:
        assert qty <= held - pending_sell
        assert not halted or closing
        if not closing:
            assert value <= max_value
            assert value >= min_value or qty == held - pending_sell


@settings(max_examples=300, deadline=None)
@given(
    quantity=st.integers(min_value=1, max_value=5000).map(D),
    price=st.decimals(min_value=D("1"), max_value=D("500"), places=2),
    equity=st.decimals(min_value=D("100000"), max_value=D("2000000"), places=2),
    cash_ratio=st.decimals(min_value=D("0"), max_value=D("1"), places=3),
    held=st.integers(min_value=0, max_value=300).map(D),
    exposure=st.decimals(min_value=D("0"), max_value=D("1000000"), places=2),
)
def test_no_approved_buy_breaches_any_limit_in_the_usual_regime(
    quantity: Decimal,
    price: Decimal,
    equity: Decimal,
    cash_ratio: Decimal,
    held: Decimal,
    exposure: Decimal,
) -> None:
    manager, _, _ = setup()
    ex = manager.new_execution(EXECUTION_ID, start_equity=equity)
    cash = equity * cash_ratio
    context = RiskContext(
        execution=ex, equity=equity, cash=cash, position_quantity=held, worker_exposure=exposure
    )
    order = intent(quantity=quantity, price=price)
    decision = manager.check(order, context)
    event(f"{decision.outcome} {decision.reason}")
    if not decision.approved:
        return
    value = decision.quantity_for(order) * price
    limits = manager.limits
    assert limits.min_order_value <= value <= limits.max_order_value
    assert held * price + value <= limits.max_position_size * equity
    assert limits.reserved_buy_cost(value) <= cash
    assert exposure + value <= limits.max_total_exposure
