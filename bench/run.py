"""Every benchmark of the worker in one run: baselines, pipeline throughput, latency, scale.

    bench/run.sh                 # quick mode (a few minutes on 2 cores)
    bench/run.sh --full          # the issue's sizes (10,000 executions, ...)
    .venv/bin/python bench/run.py --only baselines,throughput --profile

Needs the services of `scripts/services.sh up` (.services/env). Prints a table and writes
bench/results/<UTC date-time>.json. Every pipeline figure is printed next to the raw
baseline that bounds it (as a ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import ROOT, Services, redact

RESULTS = ROOT / "bench" / "results"
SECTIONS = ("baselines", "throughput", "latency", "stoploss", "storm", "scale")


@dataclass(frozen=True, slots=True)
class Sizes:
    pg_rows: int
    kafka_messages: int
    grpc_orders: int
    strategies: int
    latency_rates: tuple[float, ...]
    latency_seconds: float
    stop_triggers: int
    stop_intervals: tuple[float, ...]
    executions: int
    idle_window_s: float
    storm_executions: int


QUICK = Sizes(
    pg_rows=20_000,
    kafka_messages=20_000,
    grpc_orders=5_000,
    strategies=1_000,
    latency_rates=(50, 10),
    latency_seconds=10,
    stop_triggers=20,
    stop_intervals=(1.0, 0.05),
    executions=1_000,
    idle_window_s=20,
    storm_executions=2_000,
)
FULL = Sizes(
    pg_rows=100_000,
    kafka_messages=100_000,
    grpc_orders=20_000,
    strategies=5_000,
    latency_rates=(50, 20, 10),
    latency_seconds=30,
    stop_triggers=50,
    stop_intervals=(1.0, 0.05),
    executions=10_000,
    idle_window_s=125,
    storm_executions=10_000,
)


def _git() -> dict[str, Any]:
    def out(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"commit": out("rev-parse", "HEAD"), "dirty": bool(out("status", "--porcelain", "src"))}


def _machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def _run(
    args: argparse.Namespace, sizes: Sizes, results: dict[str, Any], services: Services
) -> None:
    for pid in [os.getpid(), *harness.service_pids().values()]:
        harness.renice(pid)  # the baselines' client is this process
    results["services"] = {
        "database": redact(services.database_url),
        "redis": services.redis_url,
        "kafka": services.kafka,
    }
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    tag = results["run_tag"]
    if "baselines" in only:
        import baselines

        section: dict[str, Any] = {}
        results["baselines"] = section
        print("baselines: asyncpg ...", flush=True)
        section["asyncpg"] = await baselines.bench_asyncpg(services, sizes.pg_rows)
        print("baselines: kafka ...", flush=True)
        section["kafka"] = await baselines.bench_kafka(
            services, sizes.kafka_messages, args.partitions
        )
        print("baselines: grpc ...", flush=True)
        section["grpc"] = await baselines.bench_grpc(sizes.grpc_orders, 32)
    if "throughput" in only:
        import pipeline

        await harness.settle()
        print(f"throughput: {sizes.strategies} strategies ...", flush=True)
        results["throughput"] = await pipeline.bench_throughput(
            services, sizes.strategies, partitions=args.partitions, tag=f"{tag}t"
        )
        t = results["throughput"]
        if t.get("orders") and t.get("submit_batches"):
            import baselines

            batch = max(1, round(t["orders"] / t["submit_batches"]))
            await harness.settle()
            print(f"baselines: raw batched grpc stream, {batch} orders/batch ...", flush=True)
            results.setdefault("baselines", {})[
                "grpc_batched"
            ] = await baselines.bench_grpc_batched(max(5_000, t["orders"]), batch)
        if args.profile:
            await harness.settle()
            print("throughput under cProfile ...", flush=True)
            results["profile"] = await pipeline.bench_throughput(
                services,
                max(300, sizes.strategies // 2),
                partitions=args.partitions,
                tag=f"{tag}p",
                profile_path=RESULTS / f"{tag}.pstats",
            )
            import profile_report

            summary = profile_report.summarise(str(RESULTS / f"{tag}.pstats"), top=30)
            results["profile"]["summary"] = summary
            print(profile_report.render(summary), flush=True)
    if "latency" in only:
        import pipeline

        results["latency"] = {}
        for run in range(1, args.latency_runs + 1):
            for rate in sizes.latency_rates:
                await harness.settle()
                label = f"rate_{rate:g}" + (f"_run{run}" if args.latency_runs > 1 else "")
                print(f"latency: {label}, {sizes.latency_seconds:g} s ...", flush=True)
                results["latency"][label] = await pipeline.bench_latency(
                    services,
                    rate=rate,
                    seconds=sizes.latency_seconds,
                    partitions=args.partitions,
                    tag=f"{tag}l{rate:g}r{run}",
                )
        if args.profile:
            rate = max(sizes.latency_rates)
            await harness.settle()
            print(f"latency: {rate:g} strategies/s under cProfile ...", flush=True)
            path = RESULTS / f"{tag}-latency.pstats"
            results["latency"]["profile"] = await pipeline.bench_latency(
                services,
                rate=rate,
                seconds=sizes.latency_seconds,
                partitions=args.partitions,
                tag=f"{tag}lp",
                profile_path=path,
            )
            import profile_report

            summary = profile_report.summarise(str(path), top=30)
            results["latency"]["profile"]["summary"] = summary
            print(profile_report.render(summary), flush=True)
    if "stoploss" in only:
        import pipeline

        results["stoploss"] = {}
        for interval in sizes.stop_intervals:
            await harness.settle()
            print(f"stop-loss: position_check_interval {interval:g} s ...", flush=True)
            results["stoploss"][f"interval_{interval:g}s"] = await pipeline.bench_stoploss(
                services,
                triggers=sizes.stop_triggers,
                interval=interval,
                partitions=args.partitions,
                tag=f"{tag}s{str(interval).replace('.', '')}",
            )
    if "storm" in only:
        import storm

        await harness.settle()
        n = sizes.storm_executions
        print(f"storm: {n} executions x 5 symbols, every stop on one price update ...", flush=True)
        path = RESULTS / f"{tag}-storm.pstats" if args.profile else None
        results["storm"] = await storm.bench_storm(
            services, executions=n, partitions=args.partitions, tag=f"{tag}x", profile_path=path
        )
        if path is not None:
            import profile_report

            summary = profile_report.summarise(str(path), top=30)
            results["storm"]["profile"] = summary
            print(profile_report.render(summary), flush=True)
    if "scale" in only:
        import scale

        await harness.settle()
        print(f"scale: {sizes.executions} executions x 5 symbols ...", flush=True)
        results["scale"] = await scale.bench_scale(
            services,
            executions=sizes.executions,
            idle_window_s=sizes.idle_window_s,
            tag=f"{tag}k",
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the issue's full sizes")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of bench topics")
    parser.add_argument("--profile", action="store_true", help="also profile the pipeline")
    parser.add_argument("--strategies", type=int, help="override the throughput size")
    parser.add_argument("--executions", type=int, help="override the scale size")
    parser.add_argument("--rates", help="override the latency rates, e.g. 50,10")
    parser.add_argument(
        "--latency-runs", type=int, default=1, help="run the latency phases N times in a row"
    )
    parser.add_argument("--storm-executions", type=int, help="override the storm size")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="worker config override for every phase, e.g. kafka.producer_linger_ms=0",
    )
    parser.add_argument(
        "--pg-durability",
        choices=("on", "off"),
        default="on",
        help="on (default): a private PostgreSQL with fsync/synchronous_commit on, as in "
        "production; off: the shared test cluster, which runs with both off",
    )
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    parser.add_argument(
        "--nice",
        type=int,
        help="run the pipeline's processes at this niceness (e.g. -10: other tenants of a "
        "shared machine do not preempt them); default: as started",
    )
    args = parser.parse_args()
    harness.NICE = args.nice
    for item in args.set:
        key, _, value = item.partition("=")
        harness.CONFIG_OVERRIDES[key.strip()] = value.strip()
    sizes = FULL if args.full else QUICK
    if args.rates:
        sizes = replace(sizes, latency_rates=tuple(float(x) for x in args.rates.split(",")))
    if args.strategies or args.executions or args.storm_executions:
        sizes = replace(
            sizes,
            strategies=args.strategies or sizes.strategies,
            executions=args.executions or sizes.executions,
            storm_executions=args.storm_executions or sizes.storm_executions,
        )
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "run_tag": stamp.lower(),
        "started_at": started.isoformat(),
        "mode": "full" if args.full else "quick",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "sizes": asdict(sizes),
        "git": _git(),
        "machine": _machine(),
        "partitions": args.partitions,
        "config_overrides": dict(harness.CONFIG_OVERRIDES),
        "nice": args.nice,
        "gc_tuning": harness.GC_TUNING,
    }
    import uvloop

    t0 = time.perf_counter()
    services = Services.from_env()
    try:
        if args.pg_durability == "on":
            print("postgres: a private instance with fsync and synchronous_commit on ...")
            with harness.durable_postgres(services) as (durable, shown):
                results["postgres_settings"] = shown
                uvloop.run(_run(args, sizes, results, durable))
        else:
            results["postgres_settings"] = {k: "off" for k in harness.DURABLE_SETTINGS}
            uvloop.run(_run(args, sizes, results, services))
    finally:
        results["wall_seconds"] = round(time.perf_counter() - t0, 1)
        from report import render

        print(render(results))
        if not args.no_save:
            path = RESULTS / f"{stamp}.json"
            path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
            print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
