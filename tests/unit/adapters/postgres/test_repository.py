"""Pure helpers of the repository: intent validation and update merging."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from strategy_worker.adapters.postgres.repository import _merge_updates, _next_seq
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderStatus, OrderType, Side
from strategy_worker.store import OrderUpdate

EXECUTION = uuid.UUID("11111111-1111-1111-1111-111111111111")


def _intent(seq: int, execution_id: uuid.UUID = EXECUTION) -> OrderIntent:
    return OrderIntent(
        client_order_id=client_order_id(execution_id, seq),
        execution_id=execution_id,
        intent_seq=seq,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        price=Decimal(1),
        purpose=OrderPurpose.INITIAL,
    )


def test_next_seq_defaults_to_one_past_the_last_intent() -> None:
    assert _next_seq(EXECUTION, [_intent(1), _intent(4)], None, floor=1) == 5
    assert _next_seq(EXECUTION, [], None, floor=1) == 1


def test_next_seq_that_would_reuse_an_intent_seq_is_refused() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        _next_seq(EXECUTION, [_intent(3)], 3, floor=1)


def test_intent_of_another_execution_is_refused() -> None:
    with pytest.raises(ValueError, match="belongs to"):
        _next_seq(EXECUTION, [_intent(1, uuid.uuid4())], None, floor=1)


def test_merged_updates_keep_earlier_fields_a_later_update_leaves_unset() -> None:
    ack = OrderUpdate(
        client_order_id="c1",
        status=OrderStatus.ACCEPTED,
        filled_quantity=Decimal(0),
        oms_order_id="OMS-1",
    )
    filled = OrderUpdate(
        client_order_id="c1",
        status=OrderStatus.FILLED,
        filled_quantity=Decimal(5),
        filled_price=Decimal("10.5"),
    )
    other = OrderUpdate(
        client_order_id="c2", status=OrderStatus.REJECTED, filled_quantity=Decimal(0), reason="no"
    )

    merged = _merge_updates([ack, filled, other])

    assert merged["c1"].status is OrderStatus.FILLED
    assert merged["c1"].oms_order_id == "OMS-1"
    assert merged["c1"].filled_price == Decimal("10.5")
    assert merged["c2"] == other
