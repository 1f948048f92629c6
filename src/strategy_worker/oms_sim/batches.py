"""Contract 1.2's OrderBatch on the paper venue: many orders and groups, one answer.

A batch is worked like the per-order requests it replaces, in request order and with the
same rules (an order keeps SubmitOrder's idempotency on its client order id, a group
SubmitOrderGroup's atomicity), but what can be shared is done once: one price read for
every symbol the batch's new orders need, one wake-up of the report streams, one answer.
The venue is synchronous, so a batch never interleaves with another call inside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import grpc

from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim import wire
from strategy_worker.oms_sim.venue import ClientOrderIdReusedError, OrderRequest, PaperVenue
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

GetPrices = Callable[[Sequence[str]], Awaitable[Mapping[str, Decimal]]]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What GetCapabilities announces: orders per batch, unanswered batches per stream."""

    max_orders: int
    max_in_flight: int


def error(code: grpc.StatusCode, message: str) -> pb.Error:
    return pb.Error(code=code.name, message=message)


def refuse(batch_id: int, code: grpc.StatusCode, message: str) -> pb.OrderBatchAck:
    """The whole batch refused: nothing of it was processed."""
    return pb.OrderBatchAck(batch_id=batch_id, error=error(code, message))


def check(batch: pb.OrderBatch, limits: BatchLimits | None) -> pb.OrderBatchAck | None:
    """A refusal of the whole batch (batches off, empty, too large), or None to work it."""
    if limits is None:
        return refuse(
            batch.batch_id,
            grpc.StatusCode.FAILED_PRECONDITION,
            "this OMS takes no order batches (GetCapabilities: order_batches false)",
        )
    orders = sum(
        len(e.group.orders) if e.WhichOneof("entry") == "group" else 1 for e in batch.entries
    )
    if not batch.entries or orders == 0:
        return refuse(batch.batch_id, grpc.StatusCode.INVALID_ARGUMENT, "an empty batch")
    if orders > limits.max_orders:
        return refuse(
            batch.batch_id,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{orders} orders in one batch; max_batch_orders is {limits.max_orders}",
        )
    return None


async def work(
    batch: pb.OrderBatch, *, venue: PaperVenue, get_prices: GetPrices, now: datetime
) -> tuple[pb.OrderBatchAck, bool]:
    """Every entry in order; returns the acknowledgement and whether anything was created
    (the caller then wakes the report streams once)."""
    parsed: list[OrderRequest | list[OrderRequest] | pb.Error] = []
    for entry in batch.entries:
        try:
            if entry.WhichOneof("entry") == "group":
                if not entry.group.orders:
                    raise ValidationError("an order group is not empty")
                parsed.append([wire.request_from_pb(o) for o in entry.group.orders])
            else:
                parsed.append(wire.request_from_pb(entry.order))
        except ValidationError as exc:
            parsed.append(error(grpc.StatusCode.INVALID_ARGUMENT, str(exc)))
    symbols = sorted(
        {
            r.symbol
            for item in parsed
            if not isinstance(item, pb.Error)
            for r in (item if isinstance(item, list) else [item])
            if venue.get(client_order_id=r.client_order_id) is None
        }
    )
    known = await get_prices(symbols) if symbols else {}
    prices = {s: known.get(s) for s in symbols}
    acks: list[pb.BatchEntryAck] = []
    created = False
    for entry, item in zip(batch.entries, parsed, strict=True):
        if isinstance(item, list):
            ack, fresh = _group(venue, item, prices, now)
        elif isinstance(item, pb.Error):
            ack, fresh = _refused(entry, item), False
        else:
            ack, fresh = _order(venue, item, prices, now)
        acks.append(ack)
        created = created or fresh
    return pb.OrderBatchAck(batch_id=batch.batch_id, acks=acks), created


def _refused(entry: pb.BatchEntry, err: pb.Error) -> pb.BatchEntryAck:
    if entry.WhichOneof("entry") == "group":
        return pb.BatchEntryAck(group_error=err)
    return pb.BatchEntryAck(
        order=pb.SubmitOrdersResponse(client_order_id=entry.order.client_order_id, error=err)
    )


def _order(
    venue: PaperVenue,
    request: OrderRequest,
    prices: Mapping[str, Decimal | None],
    now: datetime,
) -> tuple[pb.BatchEntryAck, bool]:
    cid = request.client_order_id
    try:
        order, duplicate = venue.submit(request, price=prices.get(request.symbol), now=now)
    except ValidationError as exc:
        err = error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except ClientOrderIdReusedError as exc:
        err = error(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    else:
        answer = pb.SubmitOrdersResponse(
            client_order_id=cid, order=wire.order_to_pb(order), duplicate=duplicate
        )
        return pb.BatchEntryAck(order=answer), not duplicate
    return pb.BatchEntryAck(order=pb.SubmitOrdersResponse(client_order_id=cid, error=err)), False


def _group(
    venue: PaperVenue,
    requests: list[OrderRequest],
    prices: Mapping[str, Decimal | None],
    now: datetime,
) -> tuple[pb.BatchEntryAck, bool]:
    try:
        results = venue.submit_group(
            requests, prices={r.symbol: prices.get(r.symbol) for r in requests}, now=now
        )
    except ValidationError as exc:
        return pb.BatchEntryAck(
            group_error=error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        ), False
    except ClientOrderIdReusedError as exc:
        return pb.BatchEntryAck(group_error=error(grpc.StatusCode.ALREADY_EXISTS, str(exc))), False
    duplicate = all(dup for _, dup in results)
    answer = pb.SubmitOrderGroupResponse(
        orders=[wire.order_to_pb(order) for order, _ in results], duplicate=duplicate
    )
    return pb.BatchEntryAck(group=answer), not duplicate
