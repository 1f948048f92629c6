"""Wire mapping of contract 1.1: stops, trails, contingent links, capabilities."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.orders import (
    OmsCapabilities,
    OrderIntent,
    OrderPurpose,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim import wire
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

EXEC = uuid.UUID("11111111-2222-4333-8444-555555555555")
D = Decimal

BASE = OrderIntent(
    client_order_id="sw-abc-000002",
    execution_id=EXEC,
    intent_seq=2,
    symbol="AAPL",
    side=Side.SELL,
    order_type=OrderType.STOP_LIMIT,
    quantity=D(12),
    price=D("95.0000"),
    purpose=OrderPurpose.STOP_LOSS,
    limit_price=D("94.05"),
    stop_price=D("95.0000"),
    parent_client_order_id="sw-abc-000001",
    oco_group_id="oco-abc-000002",
    reduce_only=True,
)


@pytest.mark.parametrize(
    "intent",
    [
        BASE,
        replace(BASE, order_type=OrderType.STOP, limit_price=None),
        replace(
            BASE,
            order_type=OrderType.TRAILING_STOP,
            limit_price=None,
            stop_price=None,
            purpose=OrderPurpose.TRAILING_STOP,
            trail=Trail(pct=D("0.08"), limit_offset=D("0.5"), reference_price=D("120.25")),
        ),
        replace(
            BASE,
            order_type=OrderType.TRAILING_STOP,
            limit_price=None,
            stop_price=None,
            trail=Trail(amount=D("2.50")),
        ),
    ],
)
def test_protective_intents_cross_the_wire_unchanged(intent: OrderIntent) -> None:
    msg = codec.new_order_from_intent(intent, account_id="user-7")
    request = wire.request_from_pb(pb.NewOrder.FromString(msg.SerializeToString()))

    assert request.order_type is intent.order_type
    assert (request.stop_price, request.limit_price) == (intent.stop_price, intent.limit_price)
    assert request.trail == intent.trail
    assert request.parent_client_order_id == intent.parent_client_order_id
    assert request.oco_group_id == intent.oco_group_id
    assert request.reduce_only
    assert request.purpose == intent.purpose.value


def test_a_1_0_new_order_has_no_protective_fields() -> None:
    old = pb.NewOrder(
        client_order_id="c",
        execution_id=str(EXEC),
        account_id="a",
        symbol="AAPL",
        side=pb.SIDE_BUY,
        order_type=pb.ORDER_TYPE_MARKET,
        quantity="1",
    )

    request = wire.request_from_pb(old)

    assert request.stop_price is None
    assert request.trail is None
    assert (request.parent_client_order_id, request.oco_group_id) == ("", "")
    assert not request.reduce_only


def test_a_trail_without_an_offset_is_refused() -> None:
    with pytest.raises(ValidationError, match="pct or amount"):
        codec.trail_from_pb(pb.Trail(limit_offset="1"), "trail")


def test_capabilities_round_trip_and_unknown_order_types_are_ignored() -> None:
    caps = OmsCapabilities(
        order_types=frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP}),
        oco_groups=True,
        reduce_only=True,
        order_groups=True,
        contract_version="1.1",
    )
    msg = codec.capabilities_to_pb(caps)
    msg.order_types.append(99)  # a type from a later contract

    assert codec.capabilities_from_pb(msg) == caps
    assert OmsCapabilities.baseline().order_types == {OrderType.MARKET, OrderType.LIMIT}
