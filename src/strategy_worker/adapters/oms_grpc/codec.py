"""Mapping between the aipx.oms.v1 protobuf messages and the domain's order values.

Shared by the client and the paper OMS so both sides read and write the contract the same
way: decimals as canonical strings, enums by name, timestamps in UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from strategy_worker.domain.money import money_str, to_decimal
from strategy_worker.domain.orders import (
    ExecutionReport,
    Fill,
    OmsOrder,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.errors import ValidationError
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

_SIDE_TO_PB = {Side.BUY: pb.SIDE_BUY, Side.SELL: pb.SIDE_SELL}
_SIDE_FROM_PB = {v: k for k, v in _SIDE_TO_PB.items()}
_TYPE_TO_PB = {OrderType.MARKET: pb.ORDER_TYPE_MARKET, OrderType.LIMIT: pb.ORDER_TYPE_LIMIT}
_TYPE_FROM_PB = {v: k for k, v in _TYPE_TO_PB.items()}
_STATUS_TO_PB = {
    OrderStatus.PENDING: pb.ORDER_STATUS_PENDING,
    OrderStatus.ACCEPTED: pb.ORDER_STATUS_ACCEPTED,
    OrderStatus.PARTIALLY_FILLED: pb.ORDER_STATUS_PARTIALLY_FILLED,
    OrderStatus.FILLED: pb.ORDER_STATUS_FILLED,
    OrderStatus.CANCELLED: pb.ORDER_STATUS_CANCELLED,
    OrderStatus.REJECTED: pb.ORDER_STATUS_REJECTED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}


def side_to_pb(side: Side) -> pb.Side.ValueType:
    return _SIDE_TO_PB[side]


def side_from_pb(value: pb.Side.ValueType) -> Side:
    try:
        return _SIDE_FROM_PB[value]
    except KeyError:
        raise ValidationError(f"unknown side {value}") from None


def order_type_to_pb(order_type: OrderType) -> pb.OrderType.ValueType:
    return _TYPE_TO_PB[order_type]


def order_type_from_pb(value: pb.OrderType.ValueType) -> OrderType:
    try:
        return _TYPE_FROM_PB[value]
    except KeyError:
        raise ValidationError(f"unknown order type {value}") from None


def status_to_pb(status: OrderStatus) -> pb.OrderStatus.ValueType:
    return _STATUS_TO_PB[status]


def status_from_pb(value: pb.OrderStatus.ValueType) -> OrderStatus:
    try:
        return _STATUS_FROM_PB[value]
    except KeyError:
        raise ValidationError(f"unknown order status {value}") from None


def parse_decimal(text: str, field: str) -> Decimal:
    """A decimal string from the wire; ValidationError names the field when it is not one."""
    try:
        return to_decimal(text)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{field}: {exc}") from None


def parse_optional_decimal(text: str, field: str) -> Decimal | None:
    return None if text == "" else parse_decimal(text, field)


def parse_uuid(text: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValidationError(f"{field}: not a UUID: {text!r}") from None


def timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def new_order_from_intent(intent: OrderIntent, *, account_id: str) -> pb.NewOrder:
    """The wire form of an intent; the client order id travels unchanged on every retry."""
    limit: Decimal | None = None
    if intent.order_type is OrderType.LIMIT:
        limit = intent.limit_price if intent.limit_price is not None else intent.price
    return pb.NewOrder(
        client_order_id=intent.client_order_id,
        execution_id=str(intent.execution_id),
        account_id=account_id,
        symbol=intent.symbol,
        side=side_to_pb(intent.side),
        order_type=order_type_to_pb(intent.order_type),
        quantity=money_str(intent.quantity),
        limit_price="" if limit is None else money_str(limit),
        purpose=intent.purpose.value,
    )


def fill_from_pb(msg: pb.Fill) -> Fill:
    return Fill(
        fill_id=msg.fill_id,
        client_order_id=msg.client_order_id,
        symbol=msg.symbol,
        side=side_from_pb(msg.side),
        quantity=parse_decimal(msg.quantity, "fill.quantity"),
        price=parse_decimal(msg.price, "fill.price"),
        fee=parse_decimal(msg.fee or "0", "fill.fee"),
        filled_at=from_timestamp(msg.filled_at),
    )


def fill_to_pb(fill: Fill) -> pb.Fill:
    return pb.Fill(
        fill_id=fill.fill_id,
        client_order_id=fill.client_order_id,
        symbol=fill.symbol,
        side=side_to_pb(fill.side),
        quantity=money_str(fill.quantity),
        price=money_str(fill.price),
        fee=money_str(fill.fee),
        filled_at=timestamp(fill.filled_at),
    )


def order_from_pb(msg: pb.Order) -> OmsOrder:
    return OmsOrder(
        client_order_id=msg.client_order_id,
        oms_order_id=msg.oms_order_id,
        execution_id=parse_uuid(msg.execution_id, "order.execution_id"),
        account_id=msg.account_id,
        symbol=msg.symbol,
        side=side_from_pb(msg.side),
        order_type=order_type_from_pb(msg.order_type),
        quantity=parse_decimal(msg.quantity, "order.quantity"),
        limit_price=parse_optional_decimal(msg.limit_price, "order.limit_price"),
        status=status_from_pb(msg.status),
        filled_quantity=parse_decimal(msg.filled_quantity or "0", "order.filled_quantity"),
        avg_fill_price=parse_decimal(msg.avg_fill_price or "0", "order.avg_fill_price"),
        fills=tuple(fill_from_pb(f) for f in msg.fills),
        reason=msg.reason,
    )


def report_from_pb(msg: pb.ExecutionReport) -> ExecutionReport:
    return ExecutionReport(
        seq=msg.seq,
        client_order_id=msg.client_order_id,
        oms_order_id=msg.oms_order_id,
        execution_id=parse_uuid(msg.execution_id, "report.execution_id"),
        status=status_from_pb(msg.status),
        filled_quantity=parse_decimal(msg.filled_quantity or "0", "report.filled_quantity"),
        avg_fill_price=parse_decimal(msg.avg_fill_price or "0", "report.avg_fill_price"),
        fill=fill_from_pb(msg.fill) if msg.HasField("fill") else None,
        reason=msg.reason,
    )
