"""One long-lived SubmitOrders stream per client, shared by every caller.

Every execution's orders travel on the same bidirectional stream instead of a stream per
call (opening one costs about as much as sending a few orders). A caller hands a request to
the stream's writer task and waits for the answer the reader task routes back to it: a
batch answer by its `batch_id` (contract 1.2), a single order's by its client order id.
Neither task belongs to a caller, so a caller that is cancelled or times out never cancels
the stream under the others (grpc cancels a call whose writer is cancelled mid-write).

Flow control: at most `max_batches` batches and `max_orders` single orders are unanswered
at once (the OMS announces its batch window in GetCapabilities); a caller beyond that waits
for a slot. Below that, HTTP/2's own flow control holds the writer back when the OMS reads
slowly.

A stream that fails (the OMS went away, it was dropped) fails every request still waiting
on it with the stream's status; the next request opens a new one. Whether a failed request
was processed is unknown, so callers resubmit it: the OMS is idempotent on client order ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import grpc

from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # exported, not in the stubs
OpenCall = Callable[[], Any]
"""Opens the SubmitOrders call in write mode (`stub.SubmitOrders()`)."""


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An AioRpcError made here (a deadline of one request, a stream that ended), so that
    callers retry it exactly like one grpc raised."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


class _Stream:
    """One open call with its writer and reader tasks and the requests waiting on it."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.outbox: asyncio.Queue[pb.SubmitOrderRequest] = asyncio.Queue()
        self.batches: dict[int, asyncio.Future[pb.OrderBatchAck]] = {}
        self.orders: dict[str, list[asyncio.Future[pb.SubmitOrdersResponse]]] = {}
        self.failure: grpc.aio.AioRpcError | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        if self.failure is None:
            self.failure = error
        for future in self.batches.values():
            if not future.done():
                future.set_exception(error)
        for waiting in self.orders.values():
            for one in waiting:
                if not one.done():
                    one.set_exception(error)
        self.batches.clear()
        self.orders.clear()


class SubmitStream:
    """The shared SubmitOrders stream (see the module docstring)."""

    def __init__(self, open_call: OpenCall, *, max_batches: int, max_orders: int) -> None:
        self._open_call = open_call
        self._stream: _Stream | None = None
        self._ids = itertools.count(1)
        self._batch_slots = asyncio.Semaphore(max(1, max_batches))
        self._order_slots = asyncio.Semaphore(max(1, max_orders))
        self._closed = False
        self.opened = 0
        """How many streams were opened (1 plus the reopenings after failures)."""

    async def batch(self, entries: list[pb.BatchEntry], *, deadline_s: float) -> pb.OrderBatchAck:
        """Send one OrderBatch and return its acknowledgement; an AioRpcError when the
        stream failed or no answer came within `deadline_s` seconds."""
        async with self._batch_slots:
            stream = self._current()
            batch_id = next(self._ids)
            future: asyncio.Future[pb.OrderBatchAck] = asyncio.get_running_loop().create_future()
            stream.batches[batch_id] = future
            stream.outbox.put_nowait(
                pb.SubmitOrderRequest(batch=pb.OrderBatch(batch_id=batch_id, entries=entries))
            )
            try:
                ack: pb.OrderBatchAck = await _within(future, deadline_s)
            finally:
                stream.batches.pop(batch_id, None)
            return ack

    async def order(self, order: pb.NewOrder, *, deadline_s: float) -> pb.SubmitOrdersResponse:
        """Send one order (the per-order path of a 1.0/1.1 OMS) and return its answer."""
        async with self._order_slots:
            stream = self._current()
            cid = order.client_order_id
            future: asyncio.Future[pb.SubmitOrdersResponse] = (
                asyncio.get_running_loop().create_future()
            )
            stream.orders.setdefault(cid, []).append(future)
            stream.outbox.put_nowait(pb.SubmitOrderRequest(order=order))
            try:
                answer: pb.SubmitOrdersResponse = await _within(future, deadline_s)
            finally:
                waiting = stream.orders.get(cid)
                if waiting is not None and future in waiting:
                    waiting.remove(future)
                    if not waiting:
                        del stream.orders[cid]
            return answer

    async def close(self) -> None:
        """End the stream (idempotent); requests still waiting fail with CANCELLED."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await self._end(stream, rpc_error(grpc.StatusCode.CANCELLED, "client closed"))

    # ------------------------------------------------------------------ internals

    def _current(self) -> _Stream:
        if self._closed:
            raise rpc_error(grpc.StatusCode.CANCELLED, "the OMS client is closed")
        stream = self._stream
        if stream is None or stream.failure is not None:
            stream = self._stream = _Stream(self._open_call())
            self.opened += 1
            stream.tasks = [
                asyncio.create_task(self._write(stream), name="oms-submit-writer"),
                asyncio.create_task(self._read(stream), name="oms-submit-reader"),
            ]
        return stream

    async def _write(self, stream: _Stream) -> None:
        call = stream.call
        try:
            while True:
                request = await stream.outbox.get()
                await call.write(request)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            self._lost(stream, exc)
        except Exception as exc:  # InvalidStateError: the call already ended
            self._lost(stream, rpc_error(grpc.StatusCode.UNAVAILABLE, f"submit stream: {exc}"))

    async def _read(self, stream: _Stream) -> None:
        call = stream.call
        try:
            while True:
                response = await call.read()
                if response is _EOF:
                    raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the OMS ended the submit stream")
                if response.HasField("batch"):
                    future = stream.batches.pop(response.batch.batch_id, None)
                    if future is not None and not future.done():
                        future.set_result(response.batch)
                    continue  # an answer nobody waits for any more (timed out): dropped
                waiting = stream.orders.get(response.client_order_id)
                if waiting:
                    future_one = waiting.pop(0)
                    if not waiting:
                        del stream.orders[response.client_order_id]
                    if not future_one.done():
                        future_one.set_result(response)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            self._lost(stream, exc)
        except Exception as exc:
            self._lost(stream, rpc_error(grpc.StatusCode.UNAVAILABLE, f"submit stream: {exc}"))

    def _lost(self, stream: _Stream, error: grpc.aio.AioRpcError) -> None:
        """The stream failed: every request on it fails; the next one opens a new stream."""
        stream.fail(error)
        if self._stream is stream:
            self._stream = None
        stream.call.cancel()
        current = asyncio.current_task()
        for task in stream.tasks:
            if task is not current:
                task.cancel()

    async def _end(self, stream: _Stream, error: grpc.aio.AioRpcError) -> None:
        stream.fail(error)
        stream.call.cancel()
        for task in stream.tasks:
            task.cancel()
        for task in stream.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _within(future: asyncio.Future[Any], deadline_s: float) -> Any:
    """The future's result within `deadline_s` seconds, else DEADLINE_EXCEEDED (the answer
    may still come: the reader then drops it, and the caller's retry gets `duplicate`)."""
    try:
        async with asyncio.timeout(deadline_s):
            return await future
    except TimeoutError:
        raise rpc_error(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no answer on the submit stream in {deadline_s:g} s",
        ) from None
