"""End-to-end benchmarks of the running worker (`run_worker` in its own process, the paper
OMS in another, real Kafka, PostgreSQL and Redis): throughput of a backlog of strategies,
publish-to-first-order latency at a steady rate, and stop-loss price-to-close latency."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    CpuMeter,
    Services,
    Universe,
    WorkerProcess,
    create_topics,
    delete_prefix,
    delete_topics,
    execution_id_of,
    gc_between,
    lag_between,
    oms_process,
    scratch_database,
    service_pids,
    strategy_payload,
    summary_ms,
    worker_config,
    write_prices,
)
from stalls import attribute

LOGS = ROOT / "bench" / "results" / "logs"
_PROGRESS_SQL = """
SELECT (SELECT count(*) FROM strategy_executions) AS executions,
       count(*) AS orders,
       count(*) FILTER (WHERE status = 'FILLED') AS filled,
       count(*) FILTER (WHERE status IN ('REJECTED', 'CANCELLED')) AS dead,
       min(created_at) AS first_intent,
       max(updated_at) FILTER (WHERE status = 'FILLED') AS last_fill
FROM execution_orders"""


@dataclass
class Phase:
    """One isolated worker deployment: scratch database, topics, Redis prefix, OMS, worker."""

    services: Services
    tag: str
    universe: Universe
    db_url: str = ""
    oms: Any = None
    oms_port: int = 0
    oms_pid: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    worker: WorkerProcess | None = None
    pool: Any = None
    producer: Any = None

    @property
    def approved_topic(self) -> str:
        return str(self.config["kafka"]["topics"]["approved"])

    @property
    def redis_prefix(self) -> str:
        return f"bench:{self.tag}:prices:"

    async def progress(self) -> dict[str, Any]:
        try:
            row = await self.pool.fetchrow(_PROGRESS_SQL)
        except Exception:  # the worker has not migrated the database yet
            return {"executions": 0, "orders": 0, "filled": 0, "dead": 0}
        return dict(row)

    async def publish(self, payloads: Sequence[bytes]) -> None:
        futures = [await self.producer.send(self.approved_topic, p) for p in payloads]
        for fut in futures:
            await fut

    def cpu_meter(self) -> CpuMeter:
        pids = {"oms": self.oms_pid, **service_pids()}
        if self.worker is not None and self.worker.proc.pid:
            pids["worker"] = self.worker.proc.pid
        return CpuMeter(pids)

    async def wait_filled(
        self, executions: int, *, stall_s: float = 60.0, poll_s: float = 0.1
    ) -> dict[str, Any]:
        """Poll PostgreSQL until `executions` executions exist and none of their orders is
        still in flight; raises TimeoutError when nothing moves for `stall_s`."""
        last_change = time.monotonic()
        seen: tuple[int, int] = (-1, -1)
        while True:
            p = await self.progress()
            done = p["filled"] + p["dead"]
            if p["executions"] >= executions and done >= p["orders"]:
                return p
            if (p["executions"], done) != seen:
                seen = (p["executions"], done)
                last_change = time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                raise TimeoutError(f"no progress for {stall_s:g} s: {p}")
            if self.worker is not None and not self.worker.alive():
                raise RuntimeError(f"worker exited; see {self.worker.log_path}")
            await asyncio.sleep(poll_s)


@contextlib.asynccontextmanager
async def phase(
    services: Services,
    tag: str,
    universe: Universe,
    *,
    partitions: int,
    profile_path: Path | None = None,
    start_worker: bool = True,
    **config_overrides: Any,
) -> AsyncIterator[Phase]:
    import asyncpg
    from aiokafka import AIOKafkaProducer

    ph = Phase(services, tag, universe)
    LOGS.mkdir(parents=True, exist_ok=True)
    await write_prices(services.redis_url, universe.prices, prefix=ph.redis_prefix)
    async with scratch_database(services.database_url, tag) as db_url:
        ph.db_url = db_url
        with oms_process(universe.prices) as oms:
            port = oms.port
            ph.oms, ph.oms_port, ph.oms_pid = oms, oms.port, oms.pid
            ph.config = worker_config(
                database_url=db_url,
                redis_url=services.redis_url,
                kafka=services.kafka,
                oms_port=port,
                run_tag=tag,
                redis_prefix=ph.redis_prefix,
                **config_overrides,
            )
            topics = list(ph.config["kafka"]["topics"].values())
            await create_topics(services.kafka, topics, partitions)
            ph.producer = AIOKafkaProducer(
                bootstrap_servers=services.kafka, acks="all", linger_ms=0
            )
            await ph.producer.start()
            ph.pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
            try:
                if start_worker:
                    ph.worker = WorkerProcess(
                        ph.config, log_path=LOGS / f"{tag}.log", profile_path=profile_path
                    )
                    with ph.worker:
                        yield ph
                else:
                    yield ph
            finally:
                await ph.pool.close()
                await ph.producer.stop()
                await delete_topics(services.kafka, topics)
                await delete_prefix(services.redis_url, ph.redis_prefix)


def _strategies(n: int, universe: Universe, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [strategy_payload(rng, universe.symbols)[1] for _ in range(n)]


# --------------------------------------------------------------------------- throughput


async def bench_throughput(
    services: Services,
    strategies: int,
    *,
    partitions: int,
    tag: str,
    profile_path: Path | None = None,
) -> dict[str, Any]:
    """A backlog of N strategies waits in Kafka; the worker starts and works it off. The rate
    is counted from the first intent recorded to the last fill recorded (PostgreSQL times),
    so the consumer group join is not part of it."""
    universe = Universe.make(500)
    payloads = _strategies(strategies, universe, seed=11)
    result: dict[str, Any] = {"strategies": strategies, "partitions": partitions}
    async with phase(
        services,
        tag,
        universe,
        partitions=partitions,
        profile_path=profile_path,
        start_worker=False,
    ) as ph:
        await ph.publish(payloads)
        ph.worker = WorkerProcess(
            ph.config, log_path=LOGS / f"{tag}.log", profile_path=profile_path
        )
        with ph.worker:
            cpu0 = ph.worker.cpu_seconds()
            wall0 = time.perf_counter()
            meter = ph.cpu_meter()
            meter.start()
            for _ in range(2400):  # polls another process's database, for up to 120 s
                if (await ph.progress())["orders"]:
                    break
                await asyncio.sleep(0.05)
            meter.start()  # from the first intent on: the group join is not the pipeline
            metered = time.perf_counter()
            before = ph.worker.stats()
            try:
                p = await ph.wait_filled(strategies)
            except (TimeoutError, RuntimeError) as exc:
                result["error"] = str(exc)
                p = await ph.progress()
            result["cpu_cores"] = meter.stop()
            metered = time.perf_counter() - metered
            after = ph.worker.stats()
            result["event_loop_lag"] = lag_between(before["lag_buckets"], after["lag_buckets"])
            result["gc"] = gc_between(before["gc_pauses"], after["gc_pauses"])
            result["submit_batches"] = after["batches"] - before["batches"]
            result["stalls"] = attribute(
                before["stall_probe"], after["stall_probe"], window_s=metered
            )
            cpu = ph.worker.cpu_seconds() - cpu0
            wall = time.perf_counter() - wall0
            result["worker_rss_mib"] = round(ph.worker.rss_bytes() / 2**20, 1)
        if p.get("first_intent") and p.get("last_fill"):
            seconds = (p["last_fill"] - p["first_intent"]).total_seconds()
            result["seconds"] = round(seconds, 3)
            result["orders"] = p["orders"]
            result["filled"] = p["filled"]
            result["rejected_or_cancelled"] = p["dead"]
            result["executions"] = p["executions"]
            result["orders_per_s"] = round(p["filled"] / seconds, 1)
            result["cpu_ms_per_order"] = {
                k: round(v * metered / max(1, p["filled"]) * 1000, 3)
                for k, v in result.get("cpu_cores", {}).items()
                if k != "machine"
            }
            result["strategies_per_s"] = round(p["executions"] / seconds, 1)
        result["wall_incl_startup_s"] = round(wall, 2)
        result["worker_cpu_cores"] = round(cpu / wall, 2) if wall else None
        if profile_path is not None:
            result["profile_path"] = str(profile_path.relative_to(ROOT))
    return result


# --------------------------------------------------------------------------- latency


async def _order_times(port: int, execution_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Each execution's orders as the OMS recorded them (created_at is the OMS's clock)."""
    import grpc

    from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb
    from strategy_worker.proto.aipx.oms.v1 import oms_pb2_grpc as pb_grpc

    out: dict[uuid.UUID, list[Any]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.OrderManagementServiceStub(channel)
        for eid in execution_ids:
            response = await stub.ListOrders(
                pb.ListOrdersRequest(execution_id=str(eid)), timeout=30
            )
            out[eid] = list(response.orders)
    return out


def _ts(timestamp: Any) -> float:
    return float(timestamp.seconds) + float(timestamp.nanos) / 1e9


async def bench_latency(
    services: Services,
    *,
    rate: float,
    seconds: float,
    partitions: int,
    tag: str,
    profile_path: Path | None = None,
) -> dict[str, Any]:
    """Publish at a steady rate into a warmed-up worker; latency = OMS created_at of an
    execution's first order minus our send time (same host clock; send = just before the
    producer hands the record over)."""
    universe = Universe.make(500)
    n = int(rate * seconds)
    payloads = _strategies(n + 5, universe, seed=23)
    warm, timed = payloads[:5], payloads[5:]
    result: dict[str, Any] = {"rate": rate, "seconds": seconds, "strategies": n}
    async with phase(
        services, tag, universe, partitions=partitions, profile_path=profile_path
    ) as ph:
        assert ph.worker is not None
        await ph.publish(warm)
        await ph.wait_filled(len(warm), stall_s=90)
        sent: dict[uuid.UUID, float] = {}
        futures = []
        before = ph.worker.stats()
        cpu0 = ph.worker.cpu_seconds()
        meter = ph.cpu_meter()
        meter.start()
        start = time.perf_counter() + 0.05
        wall0 = time.time()
        for i, payload in enumerate(timed):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[execution_id_of(payload)] = time.time()
            futures.append(await ph.producer.send(ph.approved_topic, payload))
        for fut in futures:
            await fut
        achieved = n / (time.time() - wall0)
        result["cpu_cores_while_publishing"] = meter.stop()
        try:
            await ph.wait_filled(len(payloads), stall_s=60)
        except (TimeoutError, RuntimeError) as exc:
            result["error"] = str(exc)
        result["worker_cpu_cores"] = round(
            (ph.worker.cpu_seconds() - cpu0) / max(1e-9, time.time() - wall0), 3
        )
        after = ph.worker.stats()
        result["event_loop_lag"] = lag_between(before["lag_buckets"], after["lag_buckets"])
        result["gc"] = gc_between(before["gc_pauses"], after["gc_pauses"])
        result["submit_batches"] = after["batches"] - before["batches"]
        result["stalls"] = attribute(
            before["stall_probe"], after["stall_probe"], window_s=time.time() - wall0
        )
        orders = await _order_times(ph.oms_port, list(sent))
        rows = await ph.pool.fetch(
            "SELECT execution_id, started_at FROM strategy_executions"
            " WHERE execution_id = ANY($1::uuid[])",
            list(sent),
        )
    started_at = {r["execution_id"]: r["started_at"].timestamp() for r in rows}
    # Stages: send -> the worker's `now` in handle_strategy (Kafka delivery, duplicate check,
    # prices, planning), then -> the first order at the OMS (intents durable, started event
    # acked by Kafka, submission stream opened).
    result["stage_publish_to_execution_started"] = summary_ms(
        [started_at[e] - sent[e] for e in sent if e in started_at]
    )
    result["stage_execution_started_to_first_order"] = summary_ms(
        [
            min(_ts(o.created_at) for o in os) - started_at[e]
            for e, os in orders.items()
            if os and e in started_at
        ]
    )
    first = [min(_ts(o.created_at) for o in os) - sent[e] for e, os in orders.items() if os]
    last = [max(_ts(o.created_at) for o in os) - sent[e] for e, os in orders.items() if os]
    result["achieved_rate"] = round(achieved, 2)
    result["with_orders"] = len(first)
    result["publish_to_first_order"] = summary_ms(first)
    result["publish_to_last_initial_order"] = summary_ms(last)
    return result


# --------------------------------------------------------------------------- stop-loss


async def bench_stoploss(
    services: Services, *, triggers: int, interval: float, partitions: int, tag: str
) -> dict[str, Any]:
    """`triggers` executions of 3 symbols of their own; once filled, one symbol of each in
    turn drops 10% in Redis (past its 5% stop) at a random phase of the monitor cadence, and
    is announced on the price channel as the market-data side does (the worker's feed reacts;
    the monitor cycle is the fallback). Latency = OMS created_at of the STOP_LOSS order minus
    the time just before the write."""
    import redis.asyncio as aioredis

    rng = random.Random(37)
    symbols = {f"S{i:03d}{c}": Decimal("100.00") for i in range(triggers) for c in "ABC"}
    universe = Universe(symbols)
    payloads = [
        strategy_payload(rng, [f"S{i:03d}{c}" for c in "ABC"], n_symbols=3)[1]
        for i in range(triggers)
    ]
    result: dict[str, Any] = {"triggers": triggers, "position_check_interval_s": interval}
    async with phase(
        services, tag, universe, partitions=partitions, position_check_interval=interval
    ) as ph:
        await ph.publish(payloads)
        await ph.wait_filled(triggers, stall_s=90)
        await asyncio.sleep(max(2 * interval, 0.5))  # let the monitor value the positions
        client = aioredis.Redis.from_url(services.redis_url)
        written: dict[uuid.UUID, float] = {}
        try:
            from datetime import UTC, datetime

            channel = ph.config["redis"]["price_channel"]
            for i, payload in enumerate(payloads):
                symbol = f"S{i:03d}A"
                written[execution_id_of(payload)] = time.time()
                # As the market-data side does: write the hash, then announce the symbol.
                async with client.pipeline(transaction=False) as pipe:
                    pipe.hset(
                        f"{ph.redis_prefix}{symbol}",
                        mapping={"price": "90.00", "ts": datetime.now(UTC).isoformat()},
                    )
                    pipe.publish(channel, symbol)
                    await pipe.execute()
                await asyncio.sleep(max(0.05, interval * rng.uniform(0.5, 1.5)))
        finally:
            await client.aclose()
        await asyncio.sleep(2 * interval + 2)
        orders = await _order_times(ph.oms_port, list(written))
    from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

    lat = []
    for eid, os in orders.items():
        stops = [o for o in os if o.purpose == "STOP_LOSS" or (o.side == pb.SIDE_SELL)]
        if stops:
            lat.append(min(_ts(o.created_at) for o in stops) - written[eid])
    result["triggered"] = len(lat)
    result["price_to_close_order"] = summary_ms(lat)
    return result
