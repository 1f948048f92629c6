"""Raw speed of the parts the worker is built on, measured in the same run as the pipeline:
asyncpg inserts (one row per statement, executemany, COPY), Kafka consume rate, and gRPC
order round trips against the paper OMS in another process (unary and the bidirectional
stream, reusing bench/bench_oms.py, plus the worker's own `submit_many` per small batch),
and the raw batched stream of contract 1.2 at the pipeline's own batch size."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from harness import Services, create_topics, delete_topics, oms_process, scratch_database

_ORDER_TABLE = """
CREATE TABLE bench_orders (
    order_id uuid PRIMARY KEY, execution_id uuid NOT NULL, client_order_id text NOT NULL UNIQUE,
    intent_seq integer NOT NULL, symbol text NOT NULL, side text NOT NULL,
    order_type text NOT NULL, purpose text NOT NULL, quantity numeric NOT NULL,
    price numeric NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL
)"""
_COLUMNS = (
    "order_id",
    "execution_id",
    "client_order_id",
    "intent_seq",
    "symbol",
    "side",
    "order_type",
    "purpose",
    "quantity",
    "price",
    "status",
    "created_at",
)


def _rows(n: int) -> list[tuple[Any, ...]]:
    execution = uuid.uuid4()
    now = datetime.now(UTC)
    return [
        (
            uuid.uuid4(),
            execution,
            f"sw-{execution.hex}-{i:06d}",
            i + 1,
            f"B{i % 500:04d}",
            "BUY",
            "MARKET",
            "INITIAL",
            Decimal(10 + i % 90),
            Decimal("123.45"),
            "PENDING",
            now,
        )
        for i in range(n)
    ]


async def bench_asyncpg(services: Services, rows: int) -> dict[str, Any]:
    """Inserts/s of order-like rows into a scratch table: one statement per row (a round trip
    each, the worst case), executemany in batches of 1,000, and COPY in batches of 1,000."""
    import asyncpg

    async with scratch_database(services.database_url, "pg") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(_ORDER_TABLE)
            insert = (
                f"INSERT INTO bench_orders ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))})"
            )
            result: dict[str, Any] = {}
            single = _rows(min(rows, 3000))
            started = time.perf_counter()
            for row in single:
                await conn.execute(insert, *row)
            result["single_row_inserts_per_s"] = round(
                len(single) / (time.perf_counter() - started)
            )

            data = _rows(rows)
            started = time.perf_counter()
            for i in range(0, rows, 1000):
                async with conn.transaction():
                    await conn.executemany(insert, data[i : i + 1000])
            result["executemany_inserts_per_s"] = round(rows / (time.perf_counter() - started))

            data = _rows(rows)
            started = time.perf_counter()
            for i in range(0, rows, 1000):
                await conn.copy_records_to_table(
                    "bench_orders", records=data[i : i + 1000], columns=_COLUMNS
                )
            result["copy_inserts_per_s"] = round(rows / (time.perf_counter() - started))
            result["rows"] = rows
            return result
        finally:
            await conn.close()


async def bench_kafka(services: Services, messages: int, partitions: int) -> dict[str, Any]:
    """Produce N 1 KiB messages to a fresh topic, then time one fresh consumer group reading
    all of them from the start (aiokafka getmany, the worker's client library)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"bench.raw.{uuid.uuid4().hex[:10]}"
    await create_topics(services.kafka, [topic], partitions)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka, linger_ms=5, acks="all")
        await producer.start()
        value = b"x" * 1024
        started = time.perf_counter()
        try:
            batch = []
            for i in range(messages):
                batch.append(await producer.send(topic, value, key=str(i).encode()))
                if len(batch) >= 2000:
                    for fut in batch:
                        await fut
                    batch.clear()
            for fut in batch:
                await fut
        finally:
            await producer.stop()
        produce_rate = messages / (time.perf_counter() - started)

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=services.kafka,
            group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            seen = 0
            first: float | None = None
            while seen < messages:
                got = await consumer.getmany(timeout_ms=1000, max_records=500)
                if first is None and got:
                    first = time.perf_counter()  # after the group join, at the first data
                seen += sum(len(records) for records in got.values())
            assert first is not None
            consume_rate = messages / (time.perf_counter() - first)
        finally:
            await consumer.stop()
        return {
            "messages": messages,
            "message_bytes": 1024,
            "partitions": partitions,
            "produce_per_s": round(produce_rate),
            "consume_per_s": round(consume_rate),
        }
    finally:
        await delete_topics(services.kafka, [topic])


async def bench_grpc(orders: int, concurrency: int) -> dict[str, Any]:
    """Round trips per second against the paper OMS in its own process (uvloop both sides):
    unary with 1 and `concurrency` in flight, one stream with `concurrency` in flight, and
    the worker's path, `OmsGrpcClient.submit_many`, one stream per batch of 6 orders."""
    import os

    from prometheus_client import CollectorRegistry

    from bench_oms import bench_stream_raw, bench_submit_many, bench_unary
    from harness import CpuMeter, summary_ms
    from strategy_worker.adapters.oms_grpc import OmsClientConfig, OmsGrpcClient

    with oms_process({}) as oms:
        port, oms_pid = oms.port, oms.pid
        client = OmsGrpcClient(
            OmsClientConfig(host="127.0.0.1", port=port, timeout=60), registry=CollectorRegistry()
        )
        try:
            await bench_unary(client, 300, 8)  # warm up the channel and both processes
            result: dict[str, Any] = {"orders": orders, "concurrency": concurrency}
            n1 = max(500, orders // 5)
            elapsed, lat = await bench_unary(client, n1, 1)
            result["unary_1_per_s"] = round(n1 / elapsed)
            result["unary_1_latency"] = summary_ms(lat)
            elapsed, lat = await bench_unary(client, orders, concurrency)
            result["unary_concurrent_per_s"] = round(orders / elapsed)
            meter = CpuMeter({"oms": oms_pid, "client": os.getpid()})
            meter.start()
            elapsed, lat = await bench_stream_raw(client, orders, concurrency)
            result["stream_per_s"] = round(orders / elapsed)
            result["stream_cpu_cores"] = meter.stop()
            result["stream_cpu_ms_per_order"] = {
                k: round(v * elapsed / orders * 1000, 3)
                for k, v in result["stream_cpu_cores"].items()
                if k != "machine"
            }
            result["stream_latency"] = summary_ms(lat)
            elapsed, lat = await bench_stream_raw(client, orders, 1)
            result["stream_1_per_s"] = round(orders / elapsed)
            elapsed, lat = await bench_submit_many(client, n1, 6)
            result["submit_many_6_per_s"] = round(n1 / elapsed)
            result["submit_many_6_latency"] = summary_ms(lat)
            return result
        finally:
            await client.close()


async def bench_grpc_batched(orders: int, batch: int, window: int = 4) -> dict[str, Any]:
    """The raw batched stream (contract 1.2's OrderBatch on the raw stub, no client logic):
    `orders` in batches of `batch`, `window` unanswered, against a fresh paper OMS in its
    own process; orders/s and the CPU of each side (run after the pipeline, at its batch
    size)."""
    import os

    from prometheus_client import CollectorRegistry

    from bench_oms import bench_stream_batched
    from harness import CpuMeter, summary_ms
    from strategy_worker.adapters.oms_grpc import OmsClientConfig, OmsGrpcClient

    with oms_process({}) as oms:
        port, oms_pid = oms.port, oms.pid
        client = OmsGrpcClient(
            OmsClientConfig(host="127.0.0.1", port=port, timeout=60), registry=CollectorRegistry()
        )
        try:
            await bench_stream_batched(client, min(orders, 20 * batch), batch, window)  # warm up
            meter = CpuMeter({"oms": oms_pid, "client": os.getpid()})
            meter.start()
            elapsed, lat = await bench_stream_batched(client, orders, batch, window)
            return {
                "orders": orders,
                "batch": batch,
                "window": window,
                "per_s": round(orders / elapsed),
                "cpu_cores": meter.stop(),
                "batch_latency": summary_ms(lat),
            }
        finally:
            await client.close()
