"""The book's JSON state: exact round trips, versioning, malformed input."""

from __future__ import annotations

import json

import pytest

from strategy_worker.domain.orders import OrderStatus
from strategy_worker.domain.protection import ProtectionBook
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.errors import DomainError

from ._helpers import EXECUTION_ID, FULL, D, at, book, spec


def busy_book() -> ProtectionBook:
    """A book with a native group, a trigger, an exit and a trail in flight."""
    b = book(
        spec(stop="0.05", trail="0.1", take="0.3", placement=ProtectionPlacement.AUTO),
        capabilities=FULL,
    )
    b.on_position("AAPL", D(100), D("10000.5"))
    b.on_position("MSFT", D(7), D(2100), selling=D(2))
    b.on_price("AAPL", D("101.25"), at(0))
    step = b.decide(at=at(0), next_seq=1)
    b.on_order(step.intents[0].client_order_id, OrderStatus.ACCEPTED, D(0), at=at(1))
    b.on_price("MSFT", D(200), at(2))
    b.decide(at=at(2), next_seq=1 + len(step.intents))
    return b


def test_a_restored_book_has_exactly_the_state_it_was_saved_with() -> None:
    original = busy_book()
    saved = json.loads(json.dumps(original.to_json()))

    restored = ProtectionBook.from_json(
        saved, execution_id=EXECUTION_ID, spec=original.spec, capabilities=FULL
    )

    assert restored.to_json() == saved
    assert restored.symbols == ["AAPL", "MSFT"]
    for symbol in restored.symbols:
        assert restored.guard(symbol) == original.guard(symbol)
    for cid in [leg.client_order_id for leg in original.guard("AAPL").native.legs]:  # type: ignore[union-attr]
        assert restored.owns(cid)
        assert restored.is_resting_leg(cid)
    msft = restored.guard("MSFT")
    assert msft is not None
    assert msft.trigger is not None  # 200 is below its stop; its native legs own the exit
    assert restored.exits_in_flight() == original.exits_in_flight() == {}


def test_to_json_clears_dirty_and_a_ratchet_sets_it() -> None:
    b = busy_book()
    b.to_json()
    assert not b.dirty

    b.on_price("AAPL", D(110), at(3))

    assert b.dirty


@pytest.mark.parametrize(
    "state",
    [
        {"version": 2, "guards": {}},
        {"guards": {}},
        {"version": 1, "guards": {"AAPL": {"quantity": "x"}}},
        {"version": 1, "guards": {"AAPL": []}},
    ],
)
def test_a_newer_or_malformed_state_is_a_domain_error(state: dict[str, object]) -> None:
    with pytest.raises(DomainError):
        ProtectionBook.from_json(state, execution_id=EXECUTION_ID, spec=spec())
