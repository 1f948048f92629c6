"""Baseline OMS throughput and latency: unary SubmitOrder vs the SubmitOrders stream.

The paper OMS runs in a separate process (as a real OMS would), the client in this one;
both on this machine over loopback. Prints orders/second and latency p50/p99.

    .venv/bin/python bench/bench_oms.py --orders 5000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry

from strategy_worker.adapters.oms_grpc import OmsClientConfig, OmsGrpcClient, codec
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.oms_sim import OmsSimConfig, OmsSimServer
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb


def _serve(conn: Connection, use_uvloop: bool) -> None:
    """Child process: run the paper OMS and report its port, until the pipe closes."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def main() -> None:
        server = OmsSimServer(OmsSimConfig(port=0))
        port = await server.start()
        conn.send(port)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # returns (or raises) when parent is done
        await server.stop(grace=None)

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _intents(n: int, tag: str) -> list[OrderIntent]:
    execution_id = uuid.uuid4()
    return [
        OrderIntent(
            client_order_id=f"bench-{tag}-{execution_id.hex[:8]}-{i:07d}",
            execution_id=execution_id,
            intent_seq=i + 1,
            symbol=("AAPL", "MSFT", "NVDA", "AMZN")[i % 4],
            side=Side.BUY if i % 2 else Side.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal(10),
            price=Decimal(100),
            purpose=OrderPurpose.INITIAL,
        )
        for i in range(n)
    ]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(name: str, n: int, elapsed: float, latencies: list[float]) -> str:
    return (
        f"{name:<36} {n:>7} {n / elapsed:>11,.0f} "
        f"{statistics.median(latencies) * 1000:>9.3f} {_pct(latencies, 0.99) * 1000:>9.3f}"
    )


async def _timed(send: Callable[[], Awaitable[object]], latencies: list[float]) -> None:
    started = time.perf_counter()
    await send()
    latencies.append(time.perf_counter() - started)


async def bench_unary(client: OmsGrpcClient, n: int, concurrency: int) -> tuple[float, list[float]]:
    intents = _intents(n, f"u{concurrency}")
    latencies: list[float] = []
    queue: asyncio.Queue[OrderIntent] = asyncio.Queue()
    for intent in intents:
        queue.put_nowait(intent)

    async def worker() -> None:
        while not queue.empty():
            intent = queue.get_nowait()
            await _timed(lambda i=intent: client.submit(i, account_id="bench"), latencies)  # type: ignore[misc]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def bench_stream_raw(client: OmsGrpcClient, n: int, window: int) -> tuple[float, list[float]]:
    """One SubmitOrders stream with at most `window` orders unanswered; latency = write of an
    order to its correlated answer (without a window it would measure queueing, not the OMS)."""
    intents = _intents(n, f"s{window}")
    sent: dict[str, float] = {}
    latencies: list[float] = []
    in_flight = asyncio.Semaphore(window)

    async def requests() -> AsyncIterator[pb.SubmitOrderRequest]:
        for intent in intents:
            await in_flight.acquire()
            sent[intent.client_order_id] = time.perf_counter()
            yield pb.SubmitOrderRequest(order=codec.new_order_from_intent(intent, account_id="b"))

    started = time.perf_counter()
    call = client._stub.SubmitOrders(requests(), timeout=120)  # raw stub: per-order timing
    async for response in call:
        latencies.append(time.perf_counter() - sent[response.client_order_id])
        in_flight.release()
    return time.perf_counter() - started, latencies


async def bench_stream_batched(
    client: OmsGrpcClient, n: int, batch: int, window: int
) -> tuple[float, list[float]]:
    """One SubmitOrders stream carrying OrderBatch requests (contract 1.2) of `batch`
    orders, at most `window` unanswered; latency = write of a batch to its answer."""
    intents = _intents(n, f"b{batch}")
    sent: dict[int, float] = {}
    latencies: list[float] = []
    in_flight = asyncio.Semaphore(window)

    async def requests() -> AsyncIterator[pb.SubmitOrderRequest]:
        for number, i in enumerate(range(0, n, batch), start=1):
            await in_flight.acquire()
            entries = [
                pb.BatchEntry(order=codec.new_order_from_intent(intent, account_id="b"))
                for intent in intents[i : i + batch]
            ]
            sent[number] = time.perf_counter()
            yield pb.SubmitOrderRequest(batch=pb.OrderBatch(batch_id=number, entries=entries))

    started = time.perf_counter()
    call = client._stub.SubmitOrders(requests(), timeout=120)  # raw stub: no client logic
    answered = 0
    async for response in call:
        latencies.append(time.perf_counter() - sent[response.batch.batch_id])
        answered += len(response.batch.acks)
        in_flight.release()
        if answered >= n:
            break
    call.cancel()
    return time.perf_counter() - started, latencies


async def bench_submit_many(client: OmsGrpcClient, n: int, batch: int) -> tuple[float, list[float]]:
    intents = _intents(n, f"m{batch}")
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(0, n, batch):
        chunk = intents[i : i + batch]
        await _timed(lambda c=chunk: client.submit_many(c, account_id="bench"), latencies)  # type: ignore[misc]
    return time.perf_counter() - started, latencies


async def run(port: int, n: int, concurrency: int) -> None:
    config = OmsClientConfig(host="127.0.0.1", port=port, timeout=60)
    client = OmsGrpcClient(config, registry=CollectorRegistry())
    try:
        await bench_unary(client, 200, 8)  # warm up the channel and both processes
        print(f"{'path':<36} {'orders':>7} {'orders/s':>11} {'p50 ms':>9} {'p99 ms':>9}")
        elapsed, lat = await bench_unary(client, n, 1)
        print(_row("unary SubmitOrder, 1 in flight", n, elapsed, lat))
        elapsed, lat = await bench_unary(client, n, concurrency)
        print(_row(f"unary SubmitOrder, {concurrency} in flight", n, elapsed, lat))
        elapsed, lat = await bench_stream_raw(client, n, 1)
        print(_row("stream SubmitOrders, 1 in flight", n, elapsed, lat))
        elapsed, lat = await bench_stream_raw(client, n, concurrency)
        print(_row(f"stream SubmitOrders, {concurrency} in flight", n, elapsed, lat))
        batch = 500
        elapsed, lat = await bench_submit_many(client, n, batch)
        print(_row(f"submit_many, {batch}/batch (batch lat.)", n, elapsed, lat))
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--uvloop", action="store_true", help="run both sides on uvloop")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, args.uvloop), daemon=True)
    server.start()
    try:
        port = parent.recv()
        print(
            f"OMS bench: paper OMS in pid {server.pid}, client in pid {os.getpid()}, "
            f"{os.cpu_count()} CPUs, loop={'uvloop' if args.uvloop else 'asyncio'}"
        )
        if args.uvloop:
            import uvloop

            uvloop.run(run(port, args.orders, args.concurrency))
        else:
            asyncio.run(run(port, args.orders, args.concurrency))
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
