"""The simulator's records in the aipx.oms.v1 wire format, and wire requests parsed."""

from __future__ import annotations

from decimal import Decimal

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.money import money_str
from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim.venue import OrderRequest, ReportType, SimOrder, VenueReport
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

_REPORT_TYPES = {
    ReportType.ACCEPTED: pb.REPORT_TYPE_ACCEPTED,
    ReportType.FILL: pb.REPORT_TYPE_FILL,
    ReportType.REJECTED: pb.REPORT_TYPE_REJECTED,
    ReportType.CANCELLED: pb.REPORT_TYPE_CANCELLED,
    ReportType.TRIGGERED: pb.REPORT_TYPE_TRIGGERED,
}


def request_from_pb(msg: pb.NewOrder) -> OrderRequest:
    """Parse a wire order; ValidationError (INVALID_ARGUMENT) when it breaks the contract."""
    if msg.side == pb.SIDE_UNSPECIFIED:
        raise ValidationError("side is required")
    if msg.order_type == pb.ORDER_TYPE_UNSPECIFIED:
        raise ValidationError("order_type is required")
    return OrderRequest(
        client_order_id=msg.client_order_id,
        execution_id=codec.parse_uuid(msg.execution_id, "execution_id"),
        account_id=msg.account_id,
        symbol=msg.symbol,
        side=codec.side_from_pb(msg.side),
        order_type=codec.order_type_from_pb(msg.order_type),
        quantity=codec.parse_decimal(msg.quantity, "quantity"),
        limit_price=codec.parse_optional_decimal(msg.limit_price, "limit_price"),
        purpose=msg.purpose,
        stop_price=codec.parse_optional_decimal(msg.stop_price, "stop_price"),
        trail=codec.trail_from_pb(msg.trail, "trail") if msg.HasField("trail") else None,
        parent_client_order_id=msg.parent_client_order_id,
        oco_group_id=msg.oco_group_id,
        reduce_only=msg.reduce_only,
    )


def order_to_pb(order: SimOrder) -> pb.Order:
    req = order.request
    msg = pb.Order(
        client_order_id=req.client_order_id,
        oms_order_id=order.oms_order_id,
        execution_id=str(req.execution_id),
        account_id=req.account_id,
        symbol=req.symbol,
        side=codec.side_to_pb(req.side),
        order_type=codec.order_type_to_pb(req.order_type),
        quantity=money_str(req.quantity),
        limit_price="" if req.limit_price is None else money_str(req.limit_price),
        status=codec.status_to_pb(order.status),
        filled_quantity=money_str(order.filled_quantity),
        avg_fill_price=money_str(order.avg_fill_price),
        fills=[codec.fill_to_pb(fill) for fill in order.fills],
        reason=order.reason,
        purpose=req.purpose,
        created_at=codec.timestamp(order.created_at),
        updated_at=codec.timestamp(order.updated_at),
        stop_price=_opt(order.stop_level),
        parent_client_order_id=req.parent_client_order_id,
        oco_group_id=req.oco_group_id,
        reduce_only=req.reduce_only,
        active_quantity=money_str(order.active),
        triggered=order.triggered,
        watermark=_opt(order.watermark),
    )
    if req.trail is not None:
        msg.trail.CopyFrom(codec.trail_to_pb(req.trail))
    return msg


def _opt(value: Decimal | None) -> str:
    return "" if value is None else money_str(value)


def report_to_pb(report: VenueReport) -> pb.ExecutionReport:
    msg = pb.ExecutionReport(
        seq=report.seq,
        report_type=_REPORT_TYPES[report.report_type],
        client_order_id=report.client_order_id,
        oms_order_id=report.oms_order_id,
        execution_id=str(report.execution_id),
        account_id=report.account_id,
        symbol=report.symbol,
        side=codec.side_to_pb(report.side),
        status=codec.status_to_pb(report.status),
        filled_quantity=money_str(report.filled_quantity),
        avg_fill_price=money_str(report.avg_fill_price),
        reason=report.reason,
        reported_at=codec.timestamp(report.reported_at),
        active_quantity=money_str(report.active_quantity),
        stop_price=_opt(report.stop_price),
        triggered=report.triggered,
    )
    if report.fill is not None:
        msg.fill.CopyFrom(codec.fill_to_pb(report.fill))
    return msg
