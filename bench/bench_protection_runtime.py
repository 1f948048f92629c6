"""Price write -> protective exit at the OMS, 10,000 trailing stops fired by one price update.

Run (the service harness must be up: `scripts/services.sh up`):

    .venv/bin/python bench/bench_protection_runtime.py [--executions 10000] [--native]

The worker is the production wiring (`build_worker`) on real services: PostgreSQL (a scratch
database, migrated), Redis (prices in hashes, announced on a pub/sub channel: the price feed),
and the paper OMS over gRPC in a process of its own (it records when each order arrives).
N executions each hold 30 AAPL bought at 100.00 with a 5% trailing stop, emulated by the
worker (the OMS holds MARKET and LIMIT only; `--native` lets it hold the trails instead, and
then the exits are the OMS's own). Three phases, timed on one wall clock (one machine):

1. quiet: a price write of 120.00 ratchets every trailing watermark (no exit, no commit):
   the time until every book shows 120.00;
2. fire: a price write of 113.00 (below 120 x 0.95 = 114) fires every trailing stop; per
   exit, the time from the price write to its arrival at the OMS (p50, p99, the last),
   every exit committed (intent and book state) before it was sent: checked after the run
   (`execution_orders.created_at` <= the OMS's arrival, one row per exit);
3. baseline, same run, same engine: one trivial decision per execution (a recorded 1-share
   buy, no price path, no protection decision) through `act_many` in the monitor's batches,
   time to each order's arrival at the OMS: the floor of "decide, commit, then send" on
   this machine. The report gives the fire phase as a ratio of it.

Prints one JSON document (and writes it to bench/results/protection-<utc>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

D = Decimal
SYMBOL = "AAPL"
BATCH = 500


# --------------------------------------------------------------------------- the paper OMS


def _oms_main(conn: Connection, native: bool) -> None:
    asyncio.run(_serve(conn, native))


async def _serve(conn: Connection, native: bool) -> None:
    from strategy_worker.log import configure_logging
    from strategy_worker.oms_sim import ManualPrices, OmsSimConfig, OmsSimServer

    configure_logging("ERROR", json_output=False)
    prices = ManualPrices({SYMBOL: D("100.00"), "MSFT": D("300.00")})
    server = OmsSimServer(
        OmsSimConfig(port=0, native_protection=native, slippage_bps=D(0), tick_interval_s=0.05),
        prices=prices,
    )
    arrived: dict[str, tuple[float, str]] = {}
    venue = server.venue
    submit_group = venue.submit_group

    def recording(requests: Any, **kwargs: Any) -> Any:
        now = time.time()
        for request in requests:
            arrived.setdefault(request.client_order_id, (now, request.purpose))
        return submit_group(requests, **kwargs)

    venue.submit_group = recording  # type: ignore[method-assign]
    port = await server.start()
    conn.send(port)
    try:
        while True:
            if not conn.poll():
                await asyncio.sleep(0.002)
                continue
            command, *args = conn.recv()
            if command == "price":
                prices.set_price(args[0], D(args[1]))
                conn.send(True)
            elif command == "arrived":
                purpose = args[0]
                conn.send([(cid, at) for cid, (at, p) in arrived.items() if p == purpose])
            elif command == "count":
                conn.send(sum(1 for _, p in arrived.values() if p == args[0]))
            elif command == "filled":
                conn.send(
                    sum(
                        1
                        for o in venue.orders()
                        if o.request.purpose == args[0] and o.status.value == "FILLED"
                    )
                )
            elif command == "stop":
                break
    finally:
        await server.stop(grace=None)


class _Discard:
    """Publisher and dead-letter sink that keeps nothing (Kafka is not what is measured,
    and a sink holding every event would only grow the heap the collector walks)."""

    async def publish(self, events: Any) -> None:
        return None

    async def dead_letter(self, payload: bytes, *, code: str, reason: str, source: str) -> None:
        return None

    async def close(self) -> None:
        return None


class Oms:
    """The OMS process and its command pipe."""

    def __init__(self, native: bool) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_oms_main, args=(child, native), daemon=True)
        self._proc.start()
        self.port: int = self._conn.recv()

    def ask(self, *command: Any) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.send(("stop",))
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# --------------------------------------------------------------------------- helpers


def _services() -> dict[str, str]:
    env = dict(os.environ)
    path = ROOT / ".services" / "env"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                name, _, value = line[len("export ") :].partition("=")
                env.setdefault(name.strip(), value.strip().strip("'\""))
    for name in ("DATABASE_URL", "REDIS_URL"):
        if name not in env:
            raise SystemExit(f"{name} is not set: run scripts/services.sh up")
    return env


@contextlib.asynccontextmanager
async def migrated_database(url: str) -> AsyncIterator[str]:
    from strategy_worker.adapters.postgres.migrate import migrate
    from strategy_worker.testing.databases import scratch_database

    async with scratch_database(url, "sw_bench_protect") as dsn:
        await migrate(dsn)
        yield dsn


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-int(q * len(ordered) * 1000) // 1000))
    return ordered[min(len(ordered), rank) - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "last_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def message(index: int, run: str) -> bytes:
    strategy_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{index}")
    return (
        '{"type": "strategy.approved", '
        f'"strategy_id": "{strategy_id}", '
        '"user_id": "660e8400-e29b-41d4-a716-446655440000", '
        '"timestamp": "2024-01-01T00:00:00Z", "config": {"name": "bench", "type": "MOMENTUM", '
        f'"symbols": ["{SYMBOL}"], "allocation": {{"{SYMBOL}": 0.3}}, '
        '"initial_capital": 10000.00, '
        '"risk_params": {"trailing_stop_pct": 0.05}}}'
    ).encode()


async def wait_until(condition: Any, within_s: float, what: str, every: float = 0.02) -> float:
    started = time.time()
    while not await condition():
        if time.time() - started > within_s:
            raise SystemExit(f"bench: {what} not reached within {within_s} s")
        await asyncio.sleep(every)
    return time.time() - started


# --------------------------------------------------------------------------- the run


async def bench(
    executions: int, native: bool, profile: str | None = None, log: str = "ERROR"
) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry
    from redis.asyncio import Redis

    from strategy_worker.adapters.oms_grpc.client import OmsGrpcClient
    from strategy_worker.adapters.oms_grpc.config import OmsClientConfig
    from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore
    from strategy_worker.adapters.redis_price_feed import RedisPriceFeed
    from strategy_worker.adapters.redis_prices import RedisPriceSource
    from strategy_worker.config import RedisSection, WorkerConfig
    from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
    from strategy_worker.domain.risk.limits import RiskLimits
    from strategy_worker.log import configure_logging
    from strategy_worker.runtime.intake import IncomingStrategy
    from strategy_worker.runtime.settings import RuntimeSettings
    from strategy_worker.runtime.wiring import build_worker

    configure_logging(log, json_output=False)
    env = _services()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-protect:{run}:prices:"
    channel = f"bench-protect:{run}:updates"
    redis = Redis.from_url(env["REDIS_URL"])
    oms = Oms(native)

    async def write_price(price: str) -> float:
        """The market-data side: the OMS's price, then HSET and PUBLISH; returns when the
        worker-facing write was made (the instant every latency is measured from)."""
        oms.ask("price", SYMBOL, price)
        at = time.time()
        await redis.hset(
            f"{prefix}{SYMBOL}", mapping={"price": price, "ts": datetime.now(UTC).isoformat()}
        )
        await redis.publish(channel, SYMBOL)
        return at

    await redis.hset(
        f"{prefix}MSFT", mapping={"price": "300.00", "ts": datetime.now(UTC).isoformat()}
    )
    figures: dict[str, Any] = {"executions": executions, "native": native}
    try:
        async with migrated_database(env["DATABASE_URL"]) as dsn:
            await write_price("100.00")
            store = await PostgresStore.connect(
                DatabaseConfig(url=dsn, pool_min_size=2, pool_max_size=8, command_timeout=60),
                lease_seconds=600,
            )
            section = RedisSection(
                url=env["REDIS_URL"],
                key_prefix=prefix,
                price_channel=channel,
                price_max_age=3600,
            )
            prices = RedisPriceSource.from_config(section)
            feed = RedisPriceFeed.from_config(section, prices)
            client = OmsGrpcClient(
                OmsClientConfig(host="127.0.0.1", port=oms.port, timeout=30),
                registry=CollectorRegistry(),
            )
            limits = RiskLimits(
                max_total_exposure=D("1e12"),
                worker_orders_per_second=1e6,
                worker_order_burst=10**6,
            )
            settings = RuntimeSettings(
                owner_id=f"bench-{run}",
                limits=limits,
                position_check_interval=3600,
                rebalance_interval=3600,
                reconcile_interval=3600,
                lease_seconds=600,
                heartbeat=60,
                price_max_age=3600,
            )
            sink = _Discard()
            async with build_worker(
                WorkerConfig(),
                store=store,
                oms=client,
                prices=prices,
                price_feed=feed,
                publisher=sink,
                dead_letters=sink,
                settings=settings,
                consume=False,
                serve_http=False,
                migrate=False,
            ) as app:
                await app.start()
                worker = app.worker
                started = time.time()
                for first in range(0, executions, BATCH):
                    batch = [
                        IncomingStrategy(message(i, run), "bench")
                        for i in range(first, min(executions, first + BATCH))
                    ]
                    await worker.handle_strategies(batch)

                async def all_held() -> bool:
                    held = 0
                    for runner in worker.book:
                        book = runner.model.protection
                        guard = None if book is None else book.guard(SYMBOL)
                        if guard is not None and guard.quantity > 0 and not guard.buying:
                            held += 1
                    return held == executions

                await wait_until(all_held, 600, "every position bought", every=0.2)
                figures["setup_s"] = round(time.time() - started, 1)
                await asyncio.sleep(2.0)  # the outbox drains; nothing else runs

                # 1. quiet: every watermark ratchets to 120, nothing is sent or committed.
                at = await write_price("120.00")

                async def ratcheted() -> bool:
                    for runner in worker.book:
                        book = runner.model.protection
                        guard = None if book is None else book.guard(SYMBOL)
                        if guard is None or guard.watermark != D("120.00"):
                            return native  # natively the OMS trails; the book's mark too
                    return True

                await wait_until(ratcheted, 120, "every watermark at 120")
                figures["quiet_ratchet_all_ms"] = round((time.time() - at) * 1000, 1)
                await asyncio.sleep(1.0)

                # 2. fire: one price write below every trailing level.
                purpose = OrderPurpose.TRAILING_STOP.value
                before = {cid for cid, _ in oms.ask("arrived", purpose)}
                profiler = None
                if profile:
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                at = await write_price("113.00")

                async def exits_done() -> bool:
                    if native:
                        return oms.ask("filled", purpose) >= executions
                    return oms.ask("count", purpose) - len(before) >= executions

                await wait_until(exits_done, 600, "every exit at the OMS", every=0.05)
                if profiler is not None and profile:
                    profiler.disable()
                    profiler.dump_stats(profile)
                if native:
                    figures["fire_native_all_filled_ms"] = round((time.time() - at) * 1000, 1)
                else:
                    arrivals = [
                        t - at for cid, t in oms.ask("arrived", purpose) if cid not in before
                    ]
                    figures["fire"] = summary_ms(arrivals)
                    figures["durable_first"] = await _durable_first(dsn, oms, purpose)
                await asyncio.sleep(2.0)

                # 3. baseline: the engine's floor, one recorded order per execution.
                runners = list(worker.book)
                eid_of = {r.execution_id: r for r in runners}

                def one_share(step: Any) -> None:
                    step.add(
                        [
                            OrderIntent(
                                client_order_id="",
                                execution_id=step.execution_id,
                                intent_seq=0,
                                symbol="MSFT",
                                side=Side.BUY,
                                order_type=OrderType.MARKET,
                                quantity=D(1),
                                price=D("300.00"),
                                purpose=OrderPurpose.INITIAL,
                            )
                        ]
                    )

                known = {cid for cid, _ in oms.ask("arrived", OrderPurpose.INITIAL.value)}
                at = time.time()
                for first in range(0, len(runners), BATCH):
                    await worker.engine.act_many(runners[first : first + BATCH], one_share)

                async def floor_done() -> bool:
                    return oms.ask("count", OrderPurpose.INITIAL.value) - len(known) >= len(eid_of)

                await wait_until(floor_done, 600, "every baseline order at the OMS", every=0.05)
                floor = [
                    t - at
                    for cid, t in oms.ask("arrived", OrderPurpose.INITIAL.value)
                    if cid not in known
                ]
                figures["baseline_one_order_per_execution"] = summary_ms(floor)
                if "fire" in figures:
                    base = figures["baseline_one_order_per_execution"]
                    figures["fire_vs_baseline"] = {
                        key: round(figures["fire"][key] / base[key], 2)
                        for key in ("p50_ms", "p99_ms", "last_ms")
                    }
                figures["unprotected"] = worker.protection.recount(worker.book)
            for close in (client.close, feed.close, prices.close, store.close):
                await close()
    finally:
        oms.close()
        keys = [k async for k in redis.scan_iter(f"bench-protect:{run}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    return figures


async def _durable_first(dsn: str, oms: Oms, purpose: str) -> dict[str, Any]:
    """Each exit is one execution_orders row committed before the OMS saw it."""
    import asyncpg

    arrived = dict(oms.ask("arrived", purpose))
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT client_order_id, extract(epoch FROM created_at) AS at FROM execution_orders "
            "WHERE purpose = $1",
            purpose,
        )
        states = await conn.fetchval("SELECT count(*) FROM execution_protection")
    finally:
        await conn.close()
    late = [r for r in rows if float(r["at"]) > arrived.get(r["client_order_id"], float("inf"))]
    unknown = set(arrived) - {r["client_order_id"] for r in rows}
    return {
        "exits_recorded": len(rows),
        "exits_at_oms": len(arrived),
        "sent_before_recorded": len(late),
        "at_oms_never_recorded": len(unknown),
        "protection_states": states,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--profile", help="write a cProfile of the fire phase to this file")
    parser.add_argument("--log", default="ERROR", help="the worker's log level")
    args = parser.parse_args()
    figures = asyncio.run(bench(args.executions, args.native, args.profile, args.log))
    figures["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"protection-{stamp}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
