"""The aipx.oms.v1 gRPC service of the paper OMS: the wire edge around `PaperVenue`.

Each call passes the fault switches and the configured latency, then does its work on the
venue synchronously (no await in between), so concurrent calls never interleave inside it.
The requests of one SubmitOrders stream are worked concurrently (a slow price read or the
configured latency of one does not hold up the next): up to `max_batches_in_flight`
batches and `_ORDERS_IN_FLIGHT` single orders at once; the stream's next request is not
read before one of them is answered, which is the stream's flow control (contract 1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

import grpc
import structlog

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.money import money_str
from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim import batches, wire
from strategy_worker.oms_sim.books import PositionBook
from strategy_worker.oms_sim.faults import FaultSwitches
from strategy_worker.oms_sim.venue import ClientOrderIdReusedError, PaperVenue, SimOrder
from strategy_worker.ports import PriceSource
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb
from strategy_worker.proto.aipx.oms.v1 import oms_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
SERVER_NAME = "strategy-worker-oms-sim/1"
_STREAM_BATCH = 512
_ORDERS_IN_FLIGHT = 64
"""Single-order requests of one SubmitOrders stream worked on at once."""
_REFUSED = pb.SubmitOrdersResponse()
"""Placed on a stream's answer queue when the OMS refuses calls (fault): the stream ends."""
_DROPPED = pb.SubmitOrdersResponse()
"""Placed there by `FaultSwitches.drop_submit_streams()`: the stream ends UNAVAILABLE."""

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
        batch_limits: batches.BatchLimits | None = None,
        report_batches: bool = True,
    ) -> None:
        self._venue = venue
        self._prices = prices
        self._faults = faults
        self._now = now
        self._latency_s = latency_s
        self._batch_limits = batch_limits
        """None: a contract 1.1 OMS (no OrderBatch; GetCapabilities says so)."""
        self._report_batches = report_batches
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
        caps = self._venue.rules.capabilities()
        limits = self._batch_limits
        if limits is not None or self._report_batches:
            caps = replace(
                caps,
                contract_version="1.2",
                order_batches=limits is not None,
                max_batch_orders=limits.max_orders if limits else 0,
                max_batches_in_flight=limits.max_in_flight if limits else 0,
                report_batches=self._report_batches,
            )
        return codec.capabilities_to_pb(caps)

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
        answers: asyncio.Queue[pb.SubmitOrdersResponse | None] = asyncio.Queue()
        limits = self._batch_limits
        batch_slots = asyncio.Semaphore(limits.max_in_flight if limits else 1)
        order_slots = asyncio.Semaphore(_ORDERS_IN_FLIGHT)
        working: set[asyncio.Task[None]] = set()
        dropped = self._faults.listen_for_submit_drops()

        async def answer(request: pb.SubmitOrderRequest, slots: asyncio.Semaphore) -> None:
            try:
                answers.put_nowait(await self._answer(request))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    slots = batch_slots if request.HasField("batch") else order_slots
                    await slots.acquire()  # flow control: read on once one is answered
                    task = asyncio.create_task(answer(request, slots))
                    working.add(task)
                    task.add_done_callback(working.discard)
                while working:
                    await asyncio.wait(set(working))
            finally:
                answers.put_nowait(None)

        async def on_drop() -> None:
            await dropped.wait()
            answers.put_nowait(_DROPPED)

        reader = asyncio.create_task(read(), name="oms-sim-submit-reader")
        drop = asyncio.create_task(on_drop(), name="oms-sim-submit-drop")
        try:
            while (response := await answers.get()) is not None:
                if response is _REFUSED:
                    await _abort(context, grpc.StatusCode.UNAVAILABLE, "OMS refusing calls (fault)")
                if response is _DROPPED:
                    await _abort(context, grpc.StatusCode.UNAVAILABLE, "submit stream dropped")
                yield response
            reader.result()
        finally:
            drop.cancel()
            self._faults.forget_submit(dropped)
            reader.cancel()
            for task in list(working):
                task.cancel()

    async def _answer(self, request: pb.SubmitOrderRequest) -> pb.SubmitOrdersResponse:
        """One request of a SubmitOrders stream: an order, or (1.2) a batch."""
        if self._faults.refusing:
            return _REFUSED
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        if request.HasField("batch"):
            ack = batches.check(request.batch, self._batch_limits)
            if ack is None:
                ack, created = await batches.work(
                    request.batch,
                    venue=self._venue,
                    get_prices=self._prices.get_prices,
                    now=self._now(),
                )
                if created:
                    self.notifier.notify()
            await self._faults.hold(after_processing=True)
            return pb.SubmitOrdersResponse(batch=ack)
        cid = request.order.client_order_id
        try:
            order, duplicate = await self._submit(request.order)
        except ValidationError as exc:
            return _stream_error(cid, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ClientOrderIdReusedError as exc:
            return _stream_error(cid, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        response = pb.SubmitOrdersResponse(
            client_order_id=cid, order=wire.order_to_pb(order), duplicate=duplicate
        )
        await self._faults.hold(after_processing=True)
        return response

    async def StreamExecutionReportBatches(
        self, request: pb.StreamExecutionReportsRequest, context: Context
    ) -> AsyncIterator[pb.ExecutionReportBatch]:
        """Contract 1.2: StreamExecutionReports with up to 512 reports per message."""
        if not self._report_batches:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "no report batches here")
        async with contextlib.aclosing(self._report_chunks(request, context)) as chunks:
            async for chunk in chunks:
                yield pb.ExecutionReportBatch(reports=chunk)

    async def StreamExecutionReports(
        self, request: pb.StreamExecutionReportsRequest, context: Context
    ) -> AsyncIterator[pb.ExecutionReport]:
        async with contextlib.aclosing(self._report_chunks(request, context)) as chunks:
            async for chunk in chunks:
                for report in chunk:
                    yield report

    async def _report_chunks(
        self, request: pb.StreamExecutionReportsRequest, context: Context
    ) -> AsyncGenerator[list[pb.ExecutionReport], None]:
        """The stream's reports in chunks of what the venue holds (at most 512 at a time),
        filtered; waits for new ones; ends with UNAVAILABLE when streams are dropped."""
        await self._enter(context)
        cursor = request.from_seq
        dropped = self._faults.listen_for_drops()
        try:
            while True:
                batch = self._venue.reports_after(cursor, limit=_STREAM_BATCH)
                chunk: list[pb.ExecutionReport] = []
                for report in batch:
                    if dropped.is_set():
                        break
                    cursor = report.seq
                    if request.execution_id and str(report.execution_id) != request.execution_id:
                        continue
                    if request.account_id and report.account_id != request.account_id:
                        continue
                    chunk.append(wire.report_to_pb(report))
                if chunk and not dropped.is_set():
                    yield chunk
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
