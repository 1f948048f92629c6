"""The protection book with every leg emulated: triggers, gaps, exits, retries."""

from __future__ import annotations

from strategy_worker.domain.events import RiskEventType, Severity
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.orders import OrderPurpose, OrderStatus, OrderType, Side
from strategy_worker.domain.protection import (
    Leg,
    ProtectionExitFailed,
    ProtectionExitReleased,
    ProtectionTriggered,
)

from ._helpers import EXECUTION_ID, D, at, book, spec


def test_a_mark_at_the_stop_level_releases_one_market_sell_of_the_whole_position() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))  # avg cost 100: stop 95.0000
    b.on_price("AAPL", D("95.01"), at(0))
    assert b.decide(at=at(0), next_seq=7).intents == ()

    b.on_price("AAPL", D(95), at(1))
    step = b.decide(at=at(1), next_seq=7)

    [intent] = step.intents
    assert intent.client_order_id == client_order_id(EXECUTION_ID, 7)
    assert (intent.side, intent.order_type, intent.quantity) == (
        Side.SELL,
        OrderType.MARKET,
        D(100),
    )
    assert intent.purpose is OrderPurpose.STOP_LOSS
    assert intent.reduce_only
    assert intent.price == D(95)
    triggered = [e for e in step.events if isinstance(e, ProtectionTriggered)]
    assert [(e.leg, e.level, e.gap) for e in triggered] == [(Leg.STOP_LOSS, D("95.0000"), False)]
    assert triggered[0].risk_event.event_type == RiskEventType.STOP_LOSS_TRIGGERED
    assert triggered[0].risk_event.severity is Severity.CRITICAL
    assert b.owns(intent.client_order_id)
    assert b.exits_in_flight() == {"AAPL": D(100)}


def test_no_second_exit_while_the_first_is_live_whatever_the_price_does() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(94), at(0))
    [first] = b.decide(at=at(0), next_seq=1).intents
    for t, mark in enumerate(["90", "99", "80", "94"], start=1):
        b.on_price("AAPL", D(mark), at(t))
        assert b.decide(at=at(t), next_seq=2).intents == ()
    b.on_order(first.client_order_id, OrderStatus.ACCEPTED, D(0), at=at(9))
    assert b.decide(at=at(9), next_seq=2).intents == ()


def test_a_gap_through_the_stop_exits_at_the_gap_price_not_the_level() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D("80.5"), at(0))

    step = b.decide(at=at(0), next_seq=1)

    [intent] = step.intents
    assert intent.price == D("80.5")
    [trig] = [e for e in step.events if isinstance(e, ProtectionTriggered)]
    assert trig.gap
    assert trig.mark == D("80.5")
    assert trig.level == D("95.0000")


def test_the_trailing_stop_ratchets_on_new_highs_only_and_fires_on_the_way_down() -> None:
    b = book(spec(stop=None, trail="0.10"))
    b.on_position("AAPL", D(10), D(1000))  # trail from the average cost, 100
    assert b.levels("AAPL") == {Leg.TRAILING_STOP: D("90.0000")}
    for t, mark in enumerate(["105", "103", "120.55", "110"]):
        b.on_price("AAPL", D(mark), at(t))
        assert b.decide(at=at(t), next_seq=1).intents == ()
    assert b.levels("AAPL") == {Leg.TRAILING_STOP: D("108.4950")}  # 120.55 x 0.9

    b.on_price("AAPL", D("108.49"), at(5))
    step = b.decide(at=at(5), next_seq=1)

    [intent] = step.intents
    assert intent.purpose is OrderPurpose.TRAILING_STOP
    assert intent.quantity == D(10)
    [trig] = [e for e in step.events if isinstance(e, ProtectionTriggered)]
    assert trig.risk_event.event_type == RiskEventType.TRAILING_STOP_TRIGGERED


def test_take_profit_is_touched_at_or_above_its_level_and_exits_at_market() -> None:
    b = book(spec(stop="0.05", take="0.20"))
    b.on_position("AAPL", D(50), D(5000))
    b.on_price("AAPL", D("119.99"), at(0))
    assert b.decide(at=at(0), next_seq=1).intents == ()

    b.on_price("AAPL", D("125"), at(1))
    [intent] = b.decide(at=at(1), next_seq=1).intents

    assert intent.purpose is OrderPurpose.TAKE_PROFIT
    assert intent.order_type is OrderType.MARKET
    assert intent.price == D(125)


def test_a_gap_through_two_stops_fires_the_one_with_the_higher_level() -> None:
    b = book(spec(stop="0.05", trail="0.02"))
    b.on_position("AAPL", D(10), D(1000))
    b.on_price("AAPL", D(110), at(0))  # trail level 107.8, stop 95
    b.decide(at=at(0), next_seq=1)

    b.on_price("AAPL", D(90), at(1))
    [intent] = b.decide(at=at(1), next_seq=1).intents

    assert intent.purpose is OrderPurpose.TRAILING_STOP


def test_other_sells_in_flight_are_not_sold_again_by_the_exit() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000), selling=D(30))
    b.on_price("AAPL", D(90), at(0))
    [intent] = b.decide(at=at(0), next_seq=1).intents
    assert intent.quantity == D(70)

    c = book(spec(stop="0.05"))
    c.on_position("AAPL", D(100), D(10000), selling=D(100))
    c.on_price("AAPL", D(90), at(0))
    assert c.decide(at=at(0), next_seq=1).intents == ()
    assert c.unprotected() == []  # everything is already being sold


def test_a_rejected_exit_is_retried_with_backoff_and_reported_unprotected_meanwhile() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(90), at(0))
    [first] = b.decide(at=at(0), next_seq=1).intents

    b.on_order(first.client_order_id, OrderStatus.REJECTED, D(0), at=at(1), reason="NO_PRICE")
    step = b.decide(at=at(1), next_seq=2)

    assert step.intents == ()
    [failed] = [e for e in step.events if isinstance(e, ProtectionExitFailed)]
    assert failed.reason == "NO_PRICE"
    assert failed.retry_at == at(2)  # retry_base_s 1 s after the first failure
    assert b.unprotected() == ["AAPL"]
    assert b.decide(at=at(1.5), next_seq=2).intents == ()
    [second] = b.decide(at=at(2), next_seq=2).intents
    assert second.quantity == D(100)
    assert b.unprotected() == []
    assert b.decide(at=at(3), next_seq=3).events == ()


def test_a_partly_filled_then_cancelled_exit_is_followed_by_one_for_the_rest() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(90), at(0))
    [first] = b.decide(at=at(0), next_seq=1).intents

    b.on_order(first.client_order_id, OrderStatus.CANCELLED, D(60), at=at(1))
    # The fill is not in the position yet: nothing is released on a stale position.
    assert b.decide(at=at(5), next_seq=2).intents == ()
    b.on_position("AAPL", D(40), D(4000))
    [rest] = b.decide(at=at(5), next_seq=2).intents

    assert rest.quantity == D(40)
    assert rest.purpose is OrderPurpose.STOP_LOSS


def test_a_filled_exit_that_flattens_the_position_forgets_the_symbol() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(90), at(0))
    [exit_order] = b.decide(at=at(0), next_seq=1).intents

    b.on_order(exit_order.client_order_id, OrderStatus.FILLED, D(100), at=at(1))
    b.on_position("AAPL", D(0), D(0))
    step = b.decide(at=at(1), next_seq=2)

    assert step.intents == ()
    assert step.cancels == ()
    assert b.symbols == []
    assert not b.owns(exit_order.client_order_id)


def test_a_reopened_position_gets_a_fresh_trigger_and_trail() -> None:
    b = book(spec(stop=None, trail="0.10"))
    b.on_position("AAPL", D(10), D(1000))
    b.on_price("AAPL", D(150), at(0))
    b.on_price("AAPL", D(130), at(1))
    [exit_order] = b.decide(at=at(1), next_seq=1).intents
    b.on_order(exit_order.client_order_id, OrderStatus.FILLED, D(10), at=at(2))
    b.on_position("AAPL", D(0), D(0))
    b.decide(at=at(2), next_seq=2)

    b.on_position("AAPL", D(5), D(600))  # bought again at 120

    assert b.levels("AAPL") == {Leg.TRAILING_STOP: D("108.0000")}
    guard = b.guard("AAPL")
    assert guard is not None
    assert guard.trigger is None
    assert guard.generation == 1


def test_a_stop_limit_exit_is_a_limit_below_the_level_and_rests_after_a_deep_gap() -> None:
    b = book(spec(stop="0.05", offset="0.01"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(80), at(0))

    [intent] = b.decide(at=at(0), next_seq=1).intents

    assert intent.order_type is OrderType.LIMIT
    assert intent.limit_price == D("94.0500")  # 95 - 1% of 95
    assert intent.price == D("94.0500")
    b.on_price("AAPL", D(70), at(1))
    assert b.decide(at=at(1), next_seq=2).intents == ()  # the limit rests: one exit


def test_exit_released_event_names_the_order_and_the_attempt() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(90), at(0))

    step = b.decide(at=at(0), next_seq=3)

    [released] = [e for e in step.events if isinstance(e, ProtectionExitReleased)]
    assert released.client_order_id == step.intents[0].client_order_id
    assert released.attempt == 1
    assert released.risk_event.event_type == RiskEventType.PROTECTION_EXIT_RELEASED


def test_without_any_leg_the_book_keeps_no_state() -> None:
    b = book(spec(stop=None))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(1), at(0))

    assert b.decide(at=at(0), next_seq=1).intents == ()
    assert b.symbols == []
    assert b.unprotected({"AAPL": D(100)}) == []


def test_a_position_the_book_never_heard_of_is_unprotected() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))

    assert b.unprotected({"AAPL": D(100), "MSFT": D(5), "IBM": D(0)}) == ["MSFT"]


def test_stale_reports_never_move_an_order_back() -> None:
    b = book(spec(stop="0.05"))
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(90), at(0))
    [exit_order] = b.decide(at=at(0), next_seq=1).intents
    cid = exit_order.client_order_id
    b.on_order(cid, OrderStatus.PARTIALLY_FILLED, D(40), at=at(1))
    b.on_order(cid, OrderStatus.ACCEPTED, D(0), at=at(1))

    guard = b.guard("AAPL")
    assert guard is not None
    assert guard.exit is not None
    assert (guard.exit.status, guard.exit.filled) == (OrderStatus.PARTIALLY_FILLED, D(40))
    assert not b.on_order("sw-someone-else", OrderStatus.FILLED, D(1), at=at(1))
