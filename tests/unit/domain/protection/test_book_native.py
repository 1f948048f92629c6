"""The protection book with legs resting at the OMS: placement, re-arm, races, fallback."""

from __future__ import annotations

from typing import Any

from strategy_worker.domain.events import RiskEventType, Severity
from strategy_worker.domain.orders import OmsCapabilities, OrderPurpose, OrderStatus, OrderType
from strategy_worker.domain.protection import (
    Leg,
    ProtectionBook,
    ProtectionFallback,
    ProtectionOverdue,
    ProtectionPlaced,
    ProtectionStep,
    ProtectionTriggered,
)
from strategy_worker.domain.strategy import ProtectionPlacement

from ._helpers import FULL, D, at, book, spec

NATIVE = ProtectionPlacement.NATIVE
AUTO = ProtectionPlacement.AUTO


def armed(**kwargs: Any) -> tuple[ProtectionBook, ProtectionStep]:
    b = book(spec(placement=AUTO, **kwargs), capabilities=FULL)
    b.on_position("AAPL", D(100), D(10000))
    b.on_price("AAPL", D(100), at(0))
    step = b.decide(at=at(0), next_seq=1)
    return b, step


def accept_all(b: ProtectionBook, step: ProtectionStep, t: float = 0.5) -> None:
    for intent in step.intents:
        b.on_order(intent.client_order_id, OrderStatus.ACCEPTED, D(0), at=at(t))


def test_every_leg_rests_at_the_oms_as_one_reduce_only_oco_group() -> None:
    b, step = armed(stop="0.05", trail="0.10", take="0.25")

    stop, trail, take = step.intents
    assert [i.purpose for i in step.intents] == [
        OrderPurpose.STOP_LOSS,
        OrderPurpose.TRAILING_STOP,
        OrderPurpose.TAKE_PROFIT,
    ]
    assert (stop.order_type, stop.stop_price) == (OrderType.STOP, D("95.0000"))
    assert trail.order_type is OrderType.TRAILING_STOP
    assert trail.trail is not None
    assert (trail.trail.pct, trail.trail.reference_price) == (D("0.10"), D("100.0000"))
    assert (take.order_type, take.limit_price) == (OrderType.LIMIT, D("125.0000"))
    assert {i.oco_group_id for i in step.intents} == {f"oco-{stop.execution_id.hex}-000001"}
    assert all(i.reduce_only and i.quantity == D(100) for i in step.intents)
    [placed] = [e for e in step.events if isinstance(e, ProtectionPlaced)]
    assert placed.legs == (Leg.STOP_LOSS, Leg.TRAILING_STOP, Leg.TAKE_PROFIT)
    assert all(b.is_resting_leg(i.client_order_id) for i in step.intents)
    assert b.exits_in_flight() == {}


def test_a_single_leg_needs_no_oco_group() -> None:
    caps = OmsCapabilities(
        order_types=frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP}),
        reduce_only=True,
    )
    b = book(spec(placement=AUTO), capabilities=caps)
    b.on_position("AAPL", D(100), D(10000))

    [stop] = b.decide(at=at(0), next_seq=1).intents

    assert stop.order_type is OrderType.STOP
    assert stop.oco_group_id == ""


def test_with_a_limit_offset_the_stop_rests_as_stop_limit() -> None:
    _b, step = armed(stop="0.05", trail="0.10", offset="0.01")

    stop, trail = step.intents

    assert stop.order_type is OrderType.STOP_LIMIT
    assert (stop.stop_price, stop.limit_price) == (D("95.0000"), D("94.0500"))
    assert trail.trail is not None
    assert trail.trail.limit_offset == D("0.9000")


def test_nothing_rests_while_an_entry_is_still_filling() -> None:
    b = book(spec(placement=AUTO), capabilities=FULL)
    b.on_position("AAPL", D(40), D(4000), buying=D(60))
    assert b.decide(at=at(0), next_seq=1).intents == ()
    b.on_price("AAPL", D(90), at(1))  # meanwhile the emulator protects the 40 held
    [exit_order] = b.decide(at=at(1), next_seq=1).intents
    assert exit_order.order_type is OrderType.MARKET
    assert exit_order.quantity == D(40)


def test_a_grown_position_is_rearmed_only_after_the_old_legs_are_cancelled() -> None:
    b, step = armed(stop="0.05", take="0.25")
    accept_all(b, step)
    b.on_position("AAPL", D(150), D(15600))  # bought 50 more at 112

    cancel = b.decide(at=at(2), next_seq=3)
    assert cancel.intents == ()
    assert sorted(cancel.cancels) == sorted(i.client_order_id for i in step.intents)
    assert b.decide(at=at(3), next_seq=3).cancels == ()  # asked once
    b.on_order(step.intents[0].client_order_id, OrderStatus.CANCELLED, D(0), at=at(4))
    assert b.decide(at=at(4), next_seq=3).intents == ()  # one leg still live
    b.on_order(step.intents[1].client_order_id, OrderStatus.CANCELLED, D(0), at=at(4))
    rearmed = b.decide(at=at(4), next_seq=3)

    assert [i.quantity for i in rearmed.intents] == [D(150), D(150)]
    assert rearmed.intents[0].stop_price == D("98.8000")  # 104 x 0.95


def test_a_native_stop_triggered_at_the_oms_is_never_doubled_by_the_emulator() -> None:
    b, step = armed(stop="0.05", take="0.25")
    accept_all(b, step)
    stop_id = step.intents[0].client_order_id

    b.on_order(stop_id, OrderStatus.ACCEPTED, D(0), at=at(1), triggered=True)
    b.on_price("AAPL", D(90), at(1))
    first = b.decide(at=at(1), next_seq=3)
    b.on_price("AAPL", D(85), at(60))
    later = b.decide(at=at(60), next_seq=3)

    assert first.intents == ()
    assert later.intents == ()
    assert later.cancels == ()  # the OMS is executing it: no overdue
    [trig] = [e for e in first.events if isinstance(e, ProtectionTriggered)]
    assert trig.by_oms
    assert trig.leg is Leg.STOP_LOSS
    b.on_order(stop_id, OrderStatus.FILLED, D(100), at=at(61))
    b.on_order(
        step.intents[1].client_order_id, OrderStatus.CANCELLED, D(0), at=at(61), reason="OCO"
    )
    b.on_position("AAPL", D(0), D(0))
    assert b.decide(at=at(61), next_seq=3).intents == ()
    assert b.symbols == []


def test_a_native_stop_that_does_not_fire_is_cancelled_after_the_grace_then_emulated() -> None:
    b, step = armed(stop="0.05", grace=5.0)
    accept_all(b, step)
    [stop] = step.intents

    b.on_price("AAPL", D(94), at(10))
    assert b.decide(at=at(10), next_seq=2).cancels == ()
    overdue = b.decide(at=at(15), next_seq=2)

    assert overdue.cancels == (stop.client_order_id,)
    [late] = [e for e in overdue.events if isinstance(e, ProtectionOverdue)]
    assert late.risk_event.severity is Severity.CRITICAL
    assert b.decide(at=at(16), next_seq=2).intents == ()  # not before the cancel is confirmed
    b.on_order(stop.client_order_id, OrderStatus.CANCELLED, D(0), at=at(17))
    [exit_order] = b.decide(at=at(17), next_seq=2).intents
    assert (exit_order.order_type, exit_order.quantity) == (OrderType.MARKET, D(100))


def test_a_native_stop_filling_while_being_cancelled_leaves_only_the_rest_to_emulate() -> None:
    b, step = armed(stop="0.05", grace=1.0)
    accept_all(b, step)
    [stop] = step.intents
    b.on_price("AAPL", D(94), at(1))
    b.decide(at=at(1), next_seq=2)
    assert b.decide(at=at(2), next_seq=2).cancels == (stop.client_order_id,)

    b.on_order(stop.client_order_id, OrderStatus.CANCELLED, D(30), at=at(3))
    assert b.decide(at=at(3), next_seq=2).intents == ()  # position not told yet
    b.on_position("AAPL", D(70), D(7000))
    [rest] = b.decide(at=at(3), next_seq=2).intents

    assert rest.quantity == D(70)


def test_rejected_native_legs_fall_back_to_emulation_with_a_warning() -> None:
    b, step = armed(stop="0.05", take="0.25")
    for intent in step.intents:
        b.on_order(intent.client_order_id, OrderStatus.REJECTED, D(0), at=at(1), reason="NOPE")

    after = b.decide(at=at(1), next_seq=3)

    assert after.intents == ()
    [fallback] = [e for e in after.events if isinstance(e, ProtectionFallback)]
    assert fallback.risk_event.severity is Severity.WARNING
    assert "NOPE" in fallback.reason
    b.on_price("AAPL", D(90), at(2))
    [exit_order] = b.decide(at=at(2), next_seq=3).intents
    assert exit_order.order_type is OrderType.MARKET


def test_native_placement_on_a_1_0_oms_warns_once_and_auto_is_silent() -> None:
    native = book(spec(placement=NATIVE, trail="0.1"))
    native.on_position("AAPL", D(10), D(1000))
    first = native.decide(at=at(0), next_seq=1)
    second = native.decide(at=at(1), next_seq=1)
    auto = book(spec(placement=AUTO, trail="0.1"))
    auto.on_position("AAPL", D(10), D(1000))

    [fallback] = first.events
    assert isinstance(fallback, ProtectionFallback)
    assert fallback.risk_event.event_type == RiskEventType.PROTECTION_FALLBACK
    assert "STOP" in fallback.reason
    assert "TRAILING_STOP" in fallback.reason
    assert second.events == ()
    assert first.intents == ()
    assert auto.decide(at=at(0), next_seq=1).events == ()


def test_a_closed_position_cancels_its_resting_legs() -> None:
    b, step = armed(stop="0.05", take="0.25")
    accept_all(b, step)

    b.on_position("AAPL", D(0), D(0))  # sold by a CLOSE order
    closing = b.decide(at=at(1), next_seq=3)

    assert sorted(closing.cancels) == sorted(i.client_order_id for i in step.intents)
    for intent in step.intents:
        b.on_order(intent.client_order_id, OrderStatus.CANCELLED, D(0), at=at(2))
    b.decide(at=at(2), next_seq=3)
    assert b.symbols == []


def test_the_oms_losing_native_support_cancels_the_legs_and_emulates() -> None:
    b, step = armed(stop="0.05")
    accept_all(b, step)

    b.set_capabilities(OmsCapabilities.baseline())
    after = b.decide(at=at(1), next_seq=2)

    assert after.cancels == (step.intents[0].client_order_id,)
