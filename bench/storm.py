"""The stop-loss storm: N executions holding the same 5 symbols, every one of their stops
crossed by ONE price update (all five symbols 10% down, past the 5% stops), as a
market-wide drop would do. Measured: from just before the price write to the first and to
the last closing order at the OMS (its created_at, same host clock), with every close
durable before it left (each order the OMS holds has its intent row in PostgreSQL), and the
CPU of each process, the event-loop lag and the batches meanwhile.

The worker runs as in production (`build_worker(config)` in its own process, Kafka intake,
the Redis price channel, the paper OMS in another process); the executions are created
through Kafka first, like the throughput phase's backlog."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import Services, Universe, WorkerProcess, gc_between, lag_between, strategy_payload
from pipeline import LOGS, phase
from stalls import attribute

SYMBOLS = tuple(f"STORM{i}" for i in range(5))
_PRICE = Decimal("100.00")
_CRASH = "90.00"  # 10% down: past a 5% stop (and its 2% buffer) for every position


async def bench_storm(
    services: Services,
    *,
    executions: int,
    partitions: int,
    tag: str,
    profile_path: Path | None = None,
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    rng = random.Random(41)
    payloads = [
        strategy_payload(rng, list(SYMBOLS), n_symbols=5, stop_loss_pct="0.05")[1]
        for _ in range(executions)
    ]
    universe = Universe(dict.fromkeys(SYMBOLS, _PRICE))
    expected = executions * len(SYMBOLS)
    result: dict[str, Any] = {"executions": executions, "positions": expected}
    async with phase(services, tag, universe, partitions=partitions, start_worker=False) as ph:
        await ph.publish(payloads)
        ph.worker = WorkerProcess(ph.config, log_path=LOGS / f"{tag}.log")
        with ph.worker:
            started = time.perf_counter()
            await ph.wait_filled(executions, stall_s=120)
            result["setup_s"] = round(time.perf_counter() - started, 1)
            await asyncio.sleep(2.0)  # the backlog's last answers and reports are in
            before = ph.worker.stats()
            meter = ph.cpu_meter()
            client = aioredis.Redis.from_url(services.redis_url)
            channel = ph.config["redis"]["price_channel"]
            try:
                if profile_path is not None:
                    ph.worker.profile(None)
                meter.start()
                written = time.time()
                async with client.pipeline(transaction=False) as pipe:
                    stamp = datetime.now(UTC).isoformat()
                    for symbol in SYMBOLS:
                        pipe.hset(
                            f"{ph.redis_prefix}{symbol}", mapping={"price": _CRASH, "ts": stamp}
                        )
                    for symbol in SYMBOLS:
                        pipe.publish(channel, symbol)
                    await pipe.execute()
                closes: list[tuple[str, float]] = []
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    closes = ph.oms.orders("STOP_LOSS")
                    if len(closes) >= expected:
                        break
                    await asyncio.sleep(0.25)
                result["cpu_cores"] = meter.stop()
                if profile_path is not None:
                    ph.worker.profile(profile_path)
            finally:
                await client.aclose()
            after = ph.worker.stats()
            durable = await ph.pool.fetchval(
                "SELECT count(*) FROM execution_orders"
                " WHERE purpose = 'STOP_LOSS' AND client_order_id = ANY($1::text[])",
                [cid for cid, _ in closes],
            )
    times = sorted(t - written for _, t in closes)
    result["closes_at_oms"] = len(closes)
    result["closes_durable_first"] = int(durable)
    if times:
        result["first_close_ms"] = round(times[0] * 1000, 1)
        result["last_close_ms"] = round(times[-1] * 1000, 1)
        result["p50_close_ms"] = round(times[len(times) // 2] * 1000, 1)
        result["closes_per_s"] = round(len(times) / max(1e-9, times[-1] - times[0]))
    result["event_loop_lag"] = lag_between(before["lag_buckets"], after["lag_buckets"])
    result["gc"] = gc_between(before["gc_pauses"], after["gc_pauses"])
    result["submit_batches"] = after["batches"] - before["batches"]
    result["stalls"] = attribute(
        before["stall_probe"], after["stall_probe"], window_s=max(1e-9, times[-1] if times else 1)
    )
    return result
