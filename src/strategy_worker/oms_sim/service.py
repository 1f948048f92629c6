"""The aipx.oms.v1 gRPC service of the paper OMS: the wire edge around `PaperVenue`.

Each call passes the fault switches and the configured latency, then does its work on the
venue synchronously (no await in between), so concurrent calls never interleave inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

import grpc
import structlog

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.money import money_str
from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim import wire
from strategy_worker.oms_sim.books import PositionBook
from strategy_worker.oms_sim.faults import FaultSwitches
from strategy_worker.oms_sim.venue import ClientOrderIdReusedError, PaperVenue, SimOrder
from strategy_worker.ports import PriceSource
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb
from strategy_worker.proto.aipx.oms.v1 import oms_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
SERVER_NAME = "strategy-worker-oms-sim/1"
_STREAM_BATCH = 512

log = structlog.get_logger(__name__)


class ReportNotifier:
    """Wakes every waiting report stream when the venue has new reports."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class OmsSimService(pb_grpc.OrderManagementServiceServicer):
    """Serves the venue over gRPC; prices come from the given PriceSource."""

    def __init__(
        self,
        *,
        venue: PaperVenue,
        prices: PriceSource,
        faults: FaultSwitches,
        now: Callable[[], datetime],
        latency_s: float = 0.0,
    ) -> None:
        self._venue = venue
        self._prices = prices
        self._faults = faults
        self._now = now
        self._latency_s = latency_s
        self.notifier = ReportNotifier()

    # -- unary -----------------------------------------------------------------------------

    async def SubmitOrder(
        self, request: pb.SubmitOrderRequest, context: Context
    ) -> pb.SubmitOrderResponse:
        await self._enter(context)
        try:
            order, duplicate = await self._submit(request.order)
        except ValidationError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ClientOrderIdReusedError as exc:
            await _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        response = pb.SubmitOrderResponse(order=wire.order_to_pb(order), duplicate=duplicate)
        await self._faults.hold(after_processing=True)
        return response

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: Context
    ) -> pb.CancelOrderResponse:
        await self._enter(context)
        order = await self._find(request.client_order_id, request.oms_order_id, context)
        self._venue.cancel(order, reason=request.reason, now=self._now())
        self.notifier.notify()
        response = pb.CancelOrderResponse(order=wire.order_to_pb(order))
        await self._faults.hold(after_processing=True)
        return response

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        await self._enter(context)
        order = await self._find(request.client_order_id, request.oms_order_id, context)
        response = pb.GetOrderResponse(order=wire.order_to_pb(order))
        await self._faults.hold(after_processing=True)
        return response

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Context
    ) -> pb.ListOrdersResponse:
        await self._enter(context)
        try:
            execution_id = codec.parse_uuid(request.execution_id, "execution_id")
            status = (
                None
                if request.status == pb.ORDER_STATUS_UNSPECIFIED
                else codec.status_from_pb(request.status)
            )
        except ValidationError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        orders = self._venue.orders(execution_id=execution_id, status=status)
        response = pb.ListOrdersResponse(orders=[wire.order_to_pb(o) for o in orders])
        await self._faults.hold(after_processing=True)
        return response

    async def GetPositions(
        self, request: pb.GetPositionsRequest, context: Context
    ) -> pb.GetPositionsResponse:
        await self._enter(context)
        scope = request.WhichOneof("scope")
        if scope == "account_id":
            book = self._venue.account_book(request.account_id)
        elif scope == "execution_id":
            try:
                execution_id = codec.parse_uuid(request.execution_id, "execution_id")
            except ValidationError as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            book = self._venue.execution_book(execution_id)
        else:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "account_id or execution_id")
        response = _positions_to_pb(book)
        await self._faults.hold(after_processing=True)
        return response

    async def GetCapabilities(
        self, request: pb.GetCapabilitiesRequest, context: Context
    ) -> pb.GetCapabilitiesResponse:
        await self._enter(context)
        return codec.capabilities_to_pb(self._venue.rules.capabilities())

    async def SubmitOrderGroup(
        self, request: pb.SubmitOrderGroupRequest, context: Context
    ) -> pb.SubmitOrderGroupResponse:
        await self._enter(context)
        if not request.orders:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "an order group is not empty")
        try:
            requests = [wire.request_from_pb(order) for order in request.orders]
            symbols = sorted({r.symbol for r in requests})
            known = await self._prices.get_prices(symbols)
            results = self._venue.submit_group(
                requests, prices={s: known.get(s) for s in symbols}, now=self._now()
            )
        except ValidationError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ClientOrderIdReusedError as exc:
            await _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        duplicate = all(dup for _, dup in results)
        if not duplicate:
            self.notifier.notify()
        response = pb.SubmitOrderGroupResponse(
            orders=[wire.order_to_pb(order) for order, _ in results], duplicate=duplicate
        )
        await self._faults.hold(after_processing=True)
        return response

    async def Ping(self, request: pb.PingRequest, context: Context) -> pb.PingResponse:
        await self._enter(context)
        return pb.PingResponse(
            status=pb.PingResponse.SERVING_STATUS_SERVING,
            last_seq=self._venue.last_seq,
            server_time=codec.timestamp(self._now()),
            server=SERVER_NAME,
        )

    # -- streams ---------------------------------------------------------------------------

    async def SubmitOrders(
        self, request_iterator: AsyncIterator[pb.SubmitOrderRequest], context: Context
    ) -> AsyncIterator[pb.SubmitOrdersResponse]:
        await self._enter(context)
        async for request in request_iterator:
            if self._faults.refusing:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "OMS refusing calls (fault)")
            cid = request.order.client_order_id
            try:
                if self._latency_s:
                    await asyncio.sleep(self._latency_s)
                order, duplicate = await self._submit(request.order)
            except ValidationError as exc:
                yield _stream_error(cid, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                continue
            except ClientOrderIdReusedError as exc:
                yield _stream_error(cid, grpc.StatusCode.ALREADY_EXISTS, str(exc))
                continue
            response = pb.SubmitOrdersResponse(
                client_order_id=cid, order=wire.order_to_pb(order), duplicate=duplicate
            )
            await self._faults.hold(after_processing=True)
            yield response

    async def StreamExecutionReports(
        self, request: pb.StreamExecutionReportsRequest, context: Context
    ) -> AsyncIterator[pb.ExecutionReport]:
        await self._enter(context)
        cursor = request.from_seq
        dropped = self._faults.listen_for_drops()
        try:
            while True:
                batch = self._venue.reports_after(cursor, limit=_STREAM_BATCH)
                for report in batch:
                    if dropped.is_set():
                        break
                    cursor = report.seq
                    if request.execution_id and str(report.execution_id) != request.execution_id:
                        continue
                    if request.account_id and report.account_id != request.account_id:
                        continue
                    yield wire.report_to_pb(report)
                if dropped.is_set():
                    await _abort(context, grpc.StatusCode.UNAVAILABLE, "report stream dropped")
                if batch:
                    continue
                waiter = asyncio.ensure_future(self.notifier.wait())
                drop_waiter = asyncio.ensure_future(dropped.wait())
                try:
                    await asyncio.wait({waiter, drop_waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    drop_waiter.cancel()
        finally:
            self._faults.forget(dropped)

    # -- helpers ---------------------------------------------------------------------------

    async def _enter(self, context: Context) -> None:
        if self._faults.refusing:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "OMS refusing calls (fault)")
        await self._faults.hold(after_processing=False)
        if self._latency_s:
            await asyncio.sleep(self._latency_s)

    async def _submit(self, new: pb.NewOrder) -> tuple[SimOrder, bool]:
        request = wire.request_from_pb(new)
        existing = self._venue.get(client_order_id=request.client_order_id)
        price: Decimal | None = None
        if existing is None:
            prices = await self._prices.get_prices([request.symbol])
            price = prices.get(request.symbol)
        order, duplicate = self._venue.submit(request, price=price, now=self._now())
        if not duplicate:
            self.notifier.notify()
        return order, duplicate

    async def _find(self, client_order_id: str, oms_order_id: str, context: Context) -> SimOrder:
        if not client_order_id and not oms_order_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "no order id given")
        order = self._venue.get(client_order_id=client_order_id, oms_order_id=oms_order_id)
        if order is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no order {client_order_id or oms_order_id!r}",
            )
        return order


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _stream_error(cid: str, code: grpc.StatusCode, message: str) -> pb.SubmitOrdersResponse:
    return pb.SubmitOrdersResponse(
        client_order_id=cid, error=pb.Error(code=code.name, message=message)
    )


def _positions_to_pb(book: PositionBook) -> pb.GetPositionsResponse:
    zero = Decimal(0)
    return pb.GetPositionsResponse(
        positions=[
            pb.Position(
                symbol=sym,
                quantity=money_str(book.net(sym)),
                bought_quantity=money_str(book.bought.get(sym, zero)),
                sold_quantity=money_str(book.sold.get(sym, zero)),
                buy_notional=money_str(book.buy_notional.get(sym, zero)),
                sell_notional=money_str(book.sell_notional.get(sym, zero)),
                fees=money_str(book.fees_by_symbol.get(sym, zero)),
            )
            for sym in book.symbols
        ],
        cash=money_str(book.cash),
        fees=money_str(book.fees),
    )
