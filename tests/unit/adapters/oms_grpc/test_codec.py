"""Wire mapping: decimals as exact strings, enums by name, intents to NewOrder and back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.orders import (
    Fill,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.errors import ValidationError
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

EXEC = uuid.UUID("11111111-2222-4333-8444-555555555555")


def intent(order_type: OrderType = OrderType.MARKET, limit: Decimal | None = None) -> OrderIntent:
    return OrderIntent(
        client_order_id="sw-abc-000001",
        execution_id=EXEC,
        intent_seq=1,
        symbol="AAPL",
        side=Side.SELL,
        order_type=order_type,
        quantity=Decimal("12"),
        price=Decimal("175.5"),
        purpose=OrderPurpose.REBALANCE,
        limit_price=limit,
    )


def test_market_intent_maps_to_new_order_without_limit_price() -> None:
    msg = codec.new_order_from_intent(intent(), account_id="user-7")

    assert msg.client_order_id == "sw-abc-000001"
    assert msg.execution_id == str(EXEC)
    assert msg.account_id == "user-7"
    assert msg.side == pb.SIDE_SELL
    assert msg.order_type == pb.ORDER_TYPE_MARKET
    assert msg.quantity == "12"
    assert msg.limit_price == ""
    assert msg.purpose == "REBALANCE"


def test_limit_intent_without_limit_price_uses_its_reference_price() -> None:
    msg = codec.new_order_from_intent(intent(OrderType.LIMIT), account_id="u")

    assert msg.limit_price == "175.5"


def test_order_round_trips_exact_decimals_and_fills() -> None:
    filled_at = datetime(2026, 1, 5, 14, 30, 1, 123000, tzinfo=UTC)
    fill = Fill(
        fill_id="F1",
        client_order_id="c",
        symbol="AAPL",
        side=Side.BUY,
        quantity=Decimal("3"),
        price=Decimal("0.1000"),
        fee=Decimal("0.000015"),
        filled_at=filled_at,
    )
    msg = pb.Order(
        client_order_id="c",
        oms_order_id="SIM-1",
        execution_id=str(EXEC),
        account_id="u",
        symbol="AAPL",
        side=pb.SIDE_BUY,
        order_type=pb.ORDER_TYPE_LIMIT,
        quantity="3",
        limit_price="0.1",
        status=pb.ORDER_STATUS_PARTIALLY_FILLED,
        filled_quantity="3",
        avg_fill_price="0.1000",
        fills=[codec.fill_to_pb(fill)],
    )

    order = codec.order_from_pb(msg)

    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.limit_price == Decimal("0.1")
    assert order.fills == (fill,)
    assert order.fills[0].fee == Decimal("0.000015")


@pytest.mark.parametrize("status", list(OrderStatus))
def test_every_status_maps_both_ways(status: OrderStatus) -> None:
    assert codec.status_from_pb(codec.status_to_pb(status)) is status


def test_a_non_decimal_string_is_a_validation_error_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="quantity"):
        codec.parse_decimal("12,5", "quantity")


def test_unspecified_enum_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        codec.side_from_pb(pb.SIDE_UNSPECIFIED)
    with pytest.raises(ValidationError):
        codec.status_from_pb(pb.ORDER_STATUS_UNSPECIFIED)


def test_report_without_fill_maps_to_domain_report() -> None:
    msg = pb.ExecutionReport(
        seq=7,
        client_order_id="c",
        oms_order_id="SIM-1",
        execution_id=str(EXEC),
        status=pb.ORDER_STATUS_REJECTED,
        reason="NO_PRICE",
    )

    report = codec.report_from_pb(msg)

    assert report.seq == 7
    assert report.fill is None
    assert report.status is OrderStatus.REJECTED
    assert report.filled_quantity == Decimal(0)
    assert report.reason == "NO_PRICE"
