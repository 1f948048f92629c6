"""`ProtectionBook.clone`: the copy a runtime step decides on, independent of the original."""

from __future__ import annotations

from strategy_worker.domain.orders import OmsCapabilities, OrderStatus
from strategy_worker.domain.protection import ProtectionTriggered
from strategy_worker.domain.strategy import ProtectionPlacement

from ._helpers import FULL, D, at, book, spec


def test_a_clone_writes_the_same_state_and_changing_it_leaves_the_original_alone() -> None:
    original = book(
        spec(stop="0.05", trail="0.10", placement=ProtectionPlacement.AUTO), capabilities=FULL
    )
    original.on_position("AAPL", D(100), D(10000))
    original.on_price("AAPL", D(104), at(0))
    placed = original.decide(at=at(0), next_seq=1)
    assert placed.intents  # native legs, tracked by the book
    before = original.to_json()

    twin = original.clone()
    assert twin.to_json() == before
    twin.on_order(placed.intents[0].client_order_id, OrderStatus.ACCEPTED, D(0), at=at(1))
    twin.on_price("AAPL", D(120), at(1))
    twin.on_position("AAPL", D(150), D(15600))
    twin.decide(at=at(2), next_seq=10)

    assert original.to_json() == before
    assert twin.to_json() != before
    guard = original.guard("AAPL")
    assert guard is not None
    assert guard.watermark == D("104")
    assert guard.native is not None
    assert all(leg.status is OrderStatus.PENDING for leg in guard.native.legs)


def test_a_clone_keeps_the_trigger_events_decide_still_owes_and_the_dirty_flag() -> None:
    original = book(spec(stop="0.05"))
    original.on_position("AAPL", D(100), D(10000))
    original.to_json()
    assert original.on_price("AAPL", D(94), at(0))  # latched; its event waits for decide

    twin = original.clone()
    assert twin.dirty

    step = twin.decide(at=at(0), next_seq=1)
    assert any(isinstance(e, ProtectionTriggered) for e in step.events)
    assert len(step.intents) == 1
    again = original.decide(at=at(0), next_seq=1)  # the original still owes it too
    assert [i.client_order_id for i in again.intents] == [i.client_order_id for i in step.intents]


def test_a_clone_may_carry_new_capabilities() -> None:
    original = book(spec(stop="0.05", placement=ProtectionPlacement.AUTO))
    original.on_position("AAPL", D(100), D(10000))
    assert not original.decide(at=at(0), next_seq=1).intents  # baseline: emulated

    twin = original.clone(capabilities=FULL)
    assert twin.capabilities is FULL
    assert original.capabilities == OmsCapabilities.baseline()
    assert twin.decide(at=at(1), next_seq=1).intents  # the stop now rests at the OMS
