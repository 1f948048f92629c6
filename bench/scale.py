"""Scale: K active executions of 5 symbols on one worker. The worker is built by the
production wiring (`build_worker(config)`: PostgreSQL, the OMS over gRPC, Redis prices,
Kafka events through the outbox relay) in a process of its own, without the Kafka intake:
executions are created by calling `Worker.handle_strategies` directly (8 lanes of 25, like 8
partitions). Then, in that process: resident memory per 1,000 executions, the time and CPU
of one monitor cycle (and of the reconcile, lease and rebalance cycles), the snapshot write
rate (`record_marks`), and the CPU used over a window while the loops run at their
configured cadence."""

from __future__ import annotations

import asyncio
import gc
import itertools
import multiprocessing as mp
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from harness import (
    Services,
    Universe,
    create_topics,
    delete_prefix,
    delete_topics,
    oms_process,
    scratch_database,
    strategy_payload,
    worker_config,
    write_prices,
)
from strategy_worker.runtime.intake import IncomingStrategy

_MAX_QUEUED_ORDERS = 2_000
#: The reconcile loop runs every 60 s in production; the bench turns the loop off while it
#: creates executions (one ListOrders per execution per cycle would starve the submissions,
#: see the report) and measures one explicit cycle instead, projected at this cadence.
_RECONCILE_CADENCE_S = 60.0
_RECONCILE_LIMIT_S = 180.0


def _cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


async def _timed(body: Callable[[], Awaitable[None]]) -> dict[str, float]:
    cpu0, wall0 = _cpu(), time.perf_counter()
    await body()
    return {"wall_s": round(time.perf_counter() - wall0, 4), "cpu_s": round(_cpu() - cpu0, 4)}


async def _scale(
    config_data: dict[str, Any], executions: int, idle_window_s: float
) -> dict[str, Any]:
    from strategy_worker.config import WorkerConfig
    from strategy_worker.runtime.wiring import build_worker

    config = WorkerConfig.model_validate(config_data)
    # The production wiring with its own parts (PostgreSQL, the OMS over gRPC, Redis,
    # Kafka events through the outbox relay); only the Kafka intake and HTTP are left out.
    async with build_worker(config, consume=False, serve_http=False) as app:
        return await _measure(app, executions, idle_window_s)


async def _measure(app: Any, executions: int, idle_window_s: float) -> dict[str, Any]:
    worker = app.worker
    store, oms, prices = worker.store, worker.engine.oms, worker.monitor._prices
    # Count the cycles the background loops run (the loops bind these at start).
    ran: dict[str, int] = {"monitor": 0, "reconcile": 0, "rebalance": 0, "lease": 0}

    def counting(
        name: str, body: Callable[[], Awaitable[None]]
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            ran[name] += 1
            await body()

        return run

    monitor_cycle, reconcile_cycle = worker.monitor.cycle, worker.reconciler.cycle
    rebalance_cycle, lease_cycle = worker.monitor.rebalance_cycle, worker.leases.cycle
    worker.monitor.cycle = counting("monitor", monitor_cycle)
    worker.reconciler.cycle = counting("reconcile", reconcile_cycle)
    worker.monitor.rebalance_cycle = counting("rebalance", rebalance_cycle)
    worker.leases.cycle = counting("lease", lease_cycle)

    snapshot_calls: list[tuple[int, float]] = []
    record_marks = store.record_marks

    async def timed_marks(writes: Any) -> Any:
        started = time.perf_counter()
        out = await record_marks(writes)
        snapshot_calls.append(
            (sum(1 for w in writes if w.snapshot is not None), time.perf_counter() - started)
        )
        return out

    store.record_marks = timed_marks

    calls: dict[str, int] = {}
    _count_calls(store, "store", calls)
    _count_calls(oms, "oms", calls)
    _count_calls(prices, "redis", calls)

    result: dict[str, Any] = {"executions": executions, "symbols_per_execution": 5}
    await worker.start()
    universe = Universe.make(500)
    rng = random.Random(53)
    payloads = [strategy_payload(rng, universe.symbols, n_symbols=5)[1] for _ in range(executions)]
    gc.collect()
    rss0 = _rss()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    submitter = worker.engine.submitter

    async def lane(number: int) -> None:
        while not queue.empty():
            # Backpressure the intake lacks: a handler returns once its intents are
            # durable, before they are sent, so a burst would pile up in the queue.
            for _ in itertools.count():
                if submitter.queued < _MAX_QUEUED_ORDERS:
                    break
                await asyncio.sleep(0.01)
            batch = []
            while not queue.empty() and len(batch) < 25:
                batch.append(IncomingStrategy(queue.get_nowait(), f"bench:{number}"))
            if batch:
                await worker.handle_strategies(batch)

    started = time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(8)))
    result["create_per_s"] = round(executions / (time.perf_counter() - started), 1)
    deadline = time.monotonic() + max(120.0, executions / 20)
    while any(r.model.live_orders() for r in worker.book) or submitter.queued:
        if time.monotonic() > deadline:
            result["error"] = "orders still open at the deadline"
            break
        await asyncio.sleep(0.5)
    result["fill_all_s"] = round(time.perf_counter() - started, 1)
    result["calls_per_execution_to_filled"] = {
        k: round(v / executions, 2) for k, v in sorted(calls.items())
    }
    calls.clear()
    runners = list(worker.book)
    result["active"] = len(runners)
    result["open_orders"] = sum(len(r.model.live_orders()) for r in runners)
    gc.collect()
    rss1 = _rss()
    result["rss_mib_total"] = round(rss1 / 2**20, 1)
    result["rss_mib_base"] = round(rss0 / 2**20, 1)
    per_1000 = (rss1 - rss0) / max(1, executions) * 1000
    result["rss_mib_per_1000"] = round(per_1000 / 2**20, 2)
    result["rss_gib_projected_10k"] = round((rss0 + per_1000 * 10) / 2**30, 3)

    calls.clear()
    cycles = [await _timed(monitor_cycle) for _ in range(3)]
    result["calls_per_monitor_cycle"] = {k: round(v / 3, 1) for k, v in sorted(calls.items())}
    best = min(cycles, key=lambda c: c["wall_s"])
    result["monitor_cycle"] = best
    result["monitor_cycles"] = cycles
    result["cpu_s_per_1000_per_cycle"] = round(best["cpu_s"] / executions * 1000, 4)
    rows = sum(n for n, _ in snapshot_calls[-3:])
    secs = sum(t for _, t in snapshot_calls[-3:])
    result["snapshot_rows_per_s"] = round(rows / secs) if secs else None
    result["snapshot_rows_per_cycle"] = snapshot_calls[-1][0] if snapshot_calls else 0
    result["snapshot_insert_s_per_cycle"] = (
        round(snapshot_calls[-1][1], 4) if snapshot_calls else None
    )
    result["lease_cycle"] = await _timed(lease_cycle)
    result["rebalance_cycle"] = await _timed(rebalance_cycle)
    calls.clear()
    try:
        async with asyncio.timeout(_RECONCILE_LIMIT_S):
            result["reconcile_cycle"] = await _timed(reconcile_cycle)
    except TimeoutError:
        done = calls.get("oms.list_orders", 0)
        result["reconcile_cycle"] = {
            "wall_s": _RECONCILE_LIMIT_S,
            "cpu_s": None,
            "unfinished": f"{done} of {executions} executions reconciled "
            f"in {_RECONCILE_LIMIT_S:g} s",
        }
    result["calls_per_reconcile_cycle"] = dict(sorted(calls.items()))

    s = worker.settings
    gc.collect()
    before = dict(ran)
    cpu0, wall0 = _cpu(), time.perf_counter()
    await asyncio.sleep(idle_window_s)
    window = time.perf_counter() - wall0
    result["window_s"] = round(window, 1)
    result["window_cycles"] = {k: ran[k] - before[k] for k in ran}
    result["window_cpu_cores"] = round((_cpu() - cpu0) / window, 4)
    lease_cores = result["lease_cycle"]["cpu_s"] / s.heartbeat
    idle = result["window_cpu_cores"]
    if result["window_cycles"]["monitor"] == 0 and result["window_cycles"]["reconcile"] == 0:
        result["idle_cpu_cores"] = idle
    else:
        idle = max(0.0, idle - lease_cores)  # a cycle ran in the window: count it once
        result["idle_cpu_cores"] = round(idle, 4)
    projected = (
        best["cpu_s"] / s.position_check_interval
        + (result["reconcile_cycle"]["cpu_s"] or 0.0) / _RECONCILE_CADENCE_S
        + result["rebalance_cycle"]["cpu_s"] / s.rebalance_interval
        + max(idle, lease_cores)
    )
    result["cadence_s"] = s.position_check_interval
    result["cpu_cores_projected"] = round(projected, 4)
    result["cpu_cores_projected_10k"] = round(projected * 10_000 / executions, 3)
    result["rss_mib_after_window"] = round(_rss() / 2**20, 1)
    return result


def _count_calls(target: Any, prefix: str, calls: dict[str, int]) -> None:
    """Count every call of the target's public coroutine methods (round trips to a service),
    by wrapping them on the instance."""
    import inspect

    for name in dir(type(target)):
        if name.startswith("_") or not inspect.iscoroutinefunction(getattr(type(target), name)):
            continue
        method = getattr(target, name)
        key = f"{prefix}.{name}"

        def wrap(method: Any = method, key: str = key) -> Any:
            async def counted(*args: Any, **kwargs: Any) -> Any:
                calls[key] = calls.get(key, 0) + 1
                return await method(*args, **kwargs)

            return counted

        setattr(target, name, wrap())


def _scale_main(conn: Connection, config: dict[str, Any], executions: int, window: float) -> None:
    import logging
    import sys

    import structlog
    import uvloop

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger().setLevel(logging.WARNING)
    try:
        result = uvloop.run(_scale(config, executions, window))
    except BaseException as exc:  # report it to the parent rather than die silently
        import traceback

        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    conn.send(result)


async def bench_scale(
    services: Services, *, executions: int, idle_window_s: float, tag: str
) -> dict[str, Any]:
    universe = Universe.make(500)
    prefix = f"bench:{tag}:prices:"
    await write_prices(services.redis_url, universe.prices, prefix=prefix)
    async with scratch_database(services.database_url, tag) as db_url:
        with oms_process(universe.prices) as oms:
            port = oms.port
            config = worker_config(
                database_url=db_url,
                redis_url=services.redis_url,
                kafka=services.kafka,
                oms_port=port,
                run_tag=tag,
                redis_prefix=prefix,
                reconcile_interval=3600.0,
            )
            topics = list(config["kafka"]["topics"].values())
            await create_topics(services.kafka, topics, 1)
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_scale_main, args=(child, config, executions, idle_window_s), daemon=True
            )
            proc.start()
            try:
                while not parent.poll(0):  # polled: a cancelled run must not hang on recv
                    if not proc.is_alive():
                        raise RuntimeError("scale process died without a result")
                    await asyncio.sleep(0.5)
                result: dict[str, Any] = parent.recv()
            finally:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=10)
                await delete_topics(services.kafka, topics)
                await delete_prefix(services.redis_url, prefix)
    return result
