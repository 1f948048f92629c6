from decimal import Decimal

from strategy_worker.domain.events import (
    Severity,
    StopLossRearmed,
    StopLossTriggered,
    StopLossWarning,
)
from strategy_worker.domain.orders import OrderPurpose, Side
from strategy_worker.domain.positions import Position
from strategy_worker.domain.risk.stop_loss import StopLossMonitor, stop_level

from .._factories import EXECUTION_ID

D = Decimal


def held(quantity: int = 100, cost: str = "10000") -> dict[str, Position]:
    return {"AAPL": Position(symbol="AAPL", quantity=D(quantity), cost_basis=D(cost))}


def scan(monitor: StopLossMonitor, mark: str, positions: dict[str, Position] | None = None, **kw):  # type: ignore[no-untyped-def]
    positions = held() if positions is None else positions
    return monitor.scan(positions, {"AAPL": D(mark)}, execution_id=EXECUTION_ID, first_seq=7, **kw)


def test_stop_level_is_average_cost_times_one_minus_pct() -> None:
    assert stop_level(held()["AAPL"], D("0.05")) == D("95.0000")
    odd = Position(symbol="X", quantity=D(3), cost_basis=D("100"))
    assert stop_level(odd, D("0.05")) == D("31.6667")


def test_mark_at_stop_level_triggers_a_critical_stop_loss_close_of_the_whole_position() -> None:
    monitor = StopLossMonitor(D("0.05"), D("0.02"))
    result = scan(monitor, "95")
    (order,) = result.intents
    assert (order.side, order.quantity, order.purpose) == (
        Side.SELL,
        D(100),
        OrderPurpose.STOP_LOSS,
    )
    assert order.intent_seq == 7
    assert order.price == D("95")
    (event,) = result.events
    assert isinstance(event, StopLossTriggered)
    assert event.risk_event.severity is Severity.CRITICAL
    assert monitor.is_blocked("AAPL")


def test_stop_order_already_in_flight_is_not_sent_twice() -> None:
    monitor = StopLossMonitor(D("0.05"), D("0.02"))
    result = scan(monitor, "90", pending_sells={"AAPL": D(100)})
    assert result.intents == ()
    partial = scan(monitor, "90", pending_sells={"AAPL": D(40)})
    assert partial.intents[0].quantity == D(60)


def test_mark_in_buffer_zone_warns_once_per_entry() -> None:
    monitor = StopLossMonitor(D("0.05"), D("0.02"))
    # S = 95, top = 96.9
    first = scan(monitor, "96.9")
    assert [type(e) for e in first.events] == [StopLossWarning]
    assert first.events[0].risk_event.severity is Severity.WARNING
    assert scan(monitor, "96").events == ()
    assert scan(monitor, "97").events == ()  # left the zone
    assert len(scan(monitor, "95.5").events) == 1  # entered again


def test_mark_above_buffer_does_nothing() -> None:
    monitor = StopLossMonitor(D("0.05"), D("0.02"))
    result = scan(monitor, "96.9001")
    assert result.intents == ()
    assert result.events == ()


def test_stopped_out_symbol_stays_blocked_until_mark_recovers_above_buffer_top() -> None:
    monitor = StopLossMonitor(D("0.05"), D("0.02"))
    scan(monitor, "94")
    flat: dict[str, Position] = {}
    assert scan(monitor, "96.9", positions=flat).events == ()
    assert monitor.is_blocked("AAPL")
    result = scan(monitor, "96.91", positions=flat)
    assert [type(e) for e in result.events] == [StopLossRearmed]
    assert not monitor.is_blocked("AAPL")


def test_no_stop_loss_configured_means_no_triggers() -> None:
    monitor = StopLossMonitor(None, D("0.02"))
    assert scan(monitor, "1").intents == ()
