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
    OmsCapabilities,
    OmsOrder,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.errors import ValidationError
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

_SIDE_TO_PB = {Side.BUY: pb.SIDE_BUY, Side.SELL: pb.SIDE_SELL}
_SIDE_FROM_PB = {v: k for k, v in _SIDE_TO_PB.items()}
_TYPE_TO_PB = {
    OrderType.MARKET: pb.ORDER_TYPE_MARKET,
    OrderType.LIMIT: pb.ORDER_TYPE_LIMIT,
    OrderType.STOP: pb.ORDER_TYPE_STOP,
    OrderType.STOP_LIMIT: pb.ORDER_TYPE_STOP_LIMIT,
    OrderType.TRAILING_STOP: pb.ORDER_TYPE_TRAILING_STOP,
}
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


def _opt_str(value: Decimal | None) -> str:
    return "" if value is None else money_str(value)


def trail_to_pb(trail: Trail) -> pb.Trail:
    msg = pb.Trail(
        limit_offset=_opt_str(trail.limit_offset),
        reference_price=_opt_str(trail.reference_price),
    )
    if trail.pct is not None:
        msg.pct = money_str(trail.pct)
    else:
        msg.amount = _opt_str(trail.amount)
    return msg


def trail_from_pb(msg: pb.Trail, field: str) -> Trail:
    """A wire trail; ValidationError when it has neither or an unparsable offset."""
    which = msg.WhichOneof("offset")
    if which is None:
        raise ValidationError(f"{field}: a trail needs pct or amount")
    return Trail(
        pct=parse_decimal(msg.pct, f"{field}.pct") if which == "pct" else None,
        amount=parse_decimal(msg.amount, f"{field}.amount") if which == "amount" else None,
        limit_offset=parse_optional_decimal(msg.limit_offset, f"{field}.limit_offset"),
        reference_price=parse_optional_decimal(msg.reference_price, f"{field}.reference_price"),
    )


def new_order_from_intent(intent: OrderIntent, *, account_id: str) -> pb.NewOrder:
    """The wire form of an intent; the client order id travels unchanged on every retry.

    A LIMIT without `limit_price` is priced at `intent.price` (1.0 behaviour); the resting
    stops carry exactly what the intent says (the OMS validates them).
    """
    limit: Decimal | None = intent.limit_price
    if intent.order_type is OrderType.LIMIT and limit is None:
        limit = intent.price
    elif intent.order_type is OrderType.MARKET:
        limit = None
    msg = pb.NewOrder(
        client_order_id=intent.client_order_id,
        execution_id=str(intent.execution_id),
        account_id=account_id,
        symbol=intent.symbol,
        side=side_to_pb(intent.side),
        order_type=order_type_to_pb(intent.order_type),
        quantity=money_str(intent.quantity),
        limit_price=_opt_str(limit),
        purpose=intent.purpose.value,
        stop_price=_opt_str(intent.stop_price),
        parent_client_order_id=intent.parent_client_order_id,
        oco_group_id=intent.oco_group_id,
        reduce_only=intent.reduce_only,
    )
    if intent.trail is not None:
        msg.trail.CopyFrom(trail_to_pb(intent.trail))
    return msg


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
        stop_price=parse_optional_decimal(msg.stop_price, "order.stop_price"),
        trail=trail_from_pb(msg.trail, "order.trail") if msg.HasField("trail") else None,
        parent_client_order_id=msg.parent_client_order_id,
        oco_group_id=msg.oco_group_id,
        reduce_only=msg.reduce_only,
        active_quantity=parse_optional_decimal(msg.active_quantity, "order.active_quantity"),
        triggered=msg.triggered,
        watermark=parse_optional_decimal(msg.watermark, "order.watermark"),
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
        triggered=msg.triggered,
        stop_price=parse_optional_decimal(msg.stop_price, "report.stop_price"),
        active_quantity=parse_optional_decimal(msg.active_quantity, "report.active_quantity"),
    )


def capabilities_to_pb(caps: OmsCapabilities) -> pb.GetCapabilitiesResponse:
    return pb.GetCapabilitiesResponse(
        contract_version=caps.contract_version,
        order_types=[order_type_to_pb(t) for t in sorted(caps.order_types)],
        oco_groups=caps.oco_groups,
        brackets=caps.brackets,
        reduce_only=caps.reduce_only,
        order_groups=caps.order_groups,
        order_batches=caps.order_batches,
        max_batch_orders=caps.max_batch_orders,
        max_batches_in_flight=caps.max_batches_in_flight,
        report_batches=caps.report_batches,
    )


def capabilities_from_pb(msg: pb.GetCapabilitiesResponse) -> OmsCapabilities:
    """What the OMS holds natively; order types this client does not know are ignored.
    Batches count only with a positive size and window (a 1.1 server leaves both 0)."""
    known = {_TYPE_FROM_PB[t] for t in msg.order_types if t in _TYPE_FROM_PB}
    batches = msg.order_batches and msg.max_batch_orders > 0 and msg.max_batches_in_flight > 0
    return OmsCapabilities(
        order_types=frozenset(known),
        oco_groups=msg.oco_groups,
        brackets=msg.brackets,
        reduce_only=msg.reduce_only,
        order_groups=msg.order_groups,
        contract_version=msg.contract_version or "1.1",
        order_batches=batches,
        max_batch_orders=msg.max_batch_orders if batches else 0,
        max_batches_in_flight=msg.max_batches_in_flight if batches else 0,
        report_batches=msg.report_batches,
    )
