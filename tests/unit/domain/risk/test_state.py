from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from strategy_worker.domain.clock import ManualClock
from strategy_worker.domain.events import DailyLossLimitReached, Severity, TradingStateChanged
from strategy_worker.domain.risk import RiskContext, RiskLimits, RiskManager, RiskReason
from strategy_worker.domain.risk.state import ExecutionRisk, TradingState

from .._factories import EXECUTION_ID, T0, intent

D = Decimal


def execution(limits: RiskLimits | None = None, now: datetime = T0) -> ExecutionRisk:
    return ExecutionRisk(EXECUTION_ID, limits or RiskLimits(), start_equity=D("100000"), now=now)


def test_daily_loss_limit_is_the_smaller_of_ratio_and_amount() -> None:
    small = execution()
    assert small.loss_limit == D("5000.00")
    big = ExecutionRisk(EXECUTION_ID, RiskLimits(), start_equity=D("2000000"), now=T0)
    assert big.loss_limit == D("50000")
    assert big.loss_floor == D("1950000")


def test_loss_just_short_of_limit_keeps_trading_and_reaching_it_halts() -> None:
    ex = execution()
    ex.observe(T0, D("95000.01"))
    assert ex.state is TradingState.ACTIVE
    assert ex.take_events() == []
    ex.observe(T0, D("95000"))
    assert ex.state is TradingState.HALTED
    reached, changed = ex.take_events()
    assert isinstance(reached, DailyLossLimitReached)
    assert reached.risk_event.severity is Severity.CRITICAL
    assert isinstance(changed, TradingStateChanged)
    assert (changed.previous, changed.current) == ("ACTIVE", "HALTED")


def test_halted_execution_resumes_at_next_trading_day_with_a_new_start_equity() -> None:
    ex = execution()
    ex.observe(T0, D("90000"))
    ex.take_events()
    ex.observe(T0 + timedelta(hours=9), D("89000"))
    assert ex.state is TradingState.HALTED
    next_day = datetime(2024, 1, 3, 0, 0, tzinfo=UTC)
    ex.observe(next_day, D("89000"))
    assert ex.state is TradingState.ACTIVE
    assert ex.day_start_equity == D("89000")
    assert ex.loss_limit == D("4450.00")
    (changed,) = ex.take_events()
    assert isinstance(changed, TradingStateChanged)
    assert changed.current == "ACTIVE"


def test_configurable_day_start_shifts_the_trading_day() -> None:
    limits = RiskLimits(trading_day_start=time(13, 30))
    ex = execution(limits, now=datetime(2024, 1, 2, 13, 0, tzinfo=UTC))
    assert str(ex.trading_day) == "2024-01-01"
    ex.observe(datetime(2024, 1, 2, 13, 10, tzinfo=UTC), D("90000"))
    assert ex.state is TradingState.HALTED
    ex.observe(datetime(2024, 1, 2, 13, 30, tzinfo=UTC), D("90000"))
    assert ex.state is TradingState.ACTIVE
    assert str(ex.trading_day) == "2024-01-02"


def test_reducing_survives_a_halt_and_the_day_rollover() -> None:
    ex = execution()
    ex.enter_reducing("position mismatch")
    ex.observe(T0, D("90000"))
    assert ex.state is TradingState.HALTED
    ex.observe(T0 + timedelta(days=1), D("90000"))
    assert ex.state is TradingState.REDUCING
    ex.leave_reducing("reconciled")
    assert ex.state is TradingState.ACTIVE
    states = [
        (e.previous, e.current) for e in ex.take_events() if isinstance(e, TradingStateChanged)
    ]
    assert states == [
        ("ACTIVE", "REDUCING"),
        ("REDUCING", "HALTED"),
        ("HALTED", "REDUCING"),
        ("REDUCING", "ACTIVE"),
    ]


def test_enter_and_leave_reducing_are_idempotent() -> None:
    ex = execution()
    ex.enter_reducing("a")
    ex.enter_reducing("b")
    assert ex.reducing_reason == "a"
    assert len(ex.take_events()) == 1
    ex.leave_reducing("x")
    ex.leave_reducing("y")
    assert len(ex.take_events()) == 1


def test_check_leaves_the_day_roll_to_the_monitor_at_fresh_marks() -> None:
    # The check may run on a valuation at fill prices (just after a restart): opening the
    # day there would take a wrong start equity (issue 12 item 4). A halt stays until the
    # monitor opens the new day.
    clock = ManualClock(T0)
    manager = RiskManager(RiskLimits(), clock)
    ex = manager.new_execution(EXECUTION_ID, start_equity=D("100000"))
    manager.observe(ex, D("94000"))
    context = RiskContext(execution=ex, equity=D("94000"), cash=D("94000"))
    assert manager.check(intent(), context).reason is RiskReason.TRADING_HALTED
    clock.set(datetime(2024, 1, 3, 0, 0, 1, tzinfo=UTC))
    assert manager.check(intent(), context).reason is RiskReason.TRADING_HALTED
    manager.observe(ex, D("94000"))
    assert ex.state is TradingState.ACTIVE
    assert ex.day_start_equity == D("94000")


def test_a_day_opened_without_fresh_marks_has_no_loss_floor_until_started() -> None:
    ex = execution()
    tomorrow = T0 + timedelta(days=1)
    ex.observe(T0, D("90000"))
    ex.take_events()
    ex.open_pending(tomorrow)
    assert ex.state is TradingState.ACTIVE
    ex.observe(tomorrow, D("1"))  # no floor: nothing halts on an unknown start
    assert ex.state is TradingState.ACTIVE
    ex.start_day(tomorrow, D("95788.90"))
    assert ex.loss_floor == D("95788.90") - D("0.05") * D("95788.90")


def test_halted_state_and_stop_outs_survive_a_restart_on_the_same_day() -> None:
    ex = execution()
    ex.observe(T0, D("90000"))
    ex.stops.stopped_out["AAPL"] = D("96.9")
    saved = ex.to_json()
    later = T0 + timedelta(hours=2)
    restored = execution(now=later)
    restored.restore(saved, later)
    assert restored.state is TradingState.HALTED
    assert restored.day_start_equity == D("100000")
    assert restored.stops.is_blocked("AAPL")
    assert restored.take_events() == []


def test_restored_halt_from_a_past_day_is_lifted() -> None:
    ex = execution()
    ex.observe(T0, D("90000"))
    tomorrow = T0 + timedelta(days=1)
    restored = execution(now=tomorrow)
    restored.restore(ex.to_json(), tomorrow)
    assert restored.state is TradingState.ACTIVE
