"""`python -m strategy_worker.testing.simulation --seed N [--steps S] [--workers W]`:
replay one seed exactly, or soak many (`--seeds 1000`), printing steps per second.

`--postgres [DSN]` runs the slower variant: the same scenarios with every store call made
on the real PostgreSQL store too, the two stores compared after every step
(`postgres_variant.py`; DSN of a server where the user may create databases, by default
`DATABASE_URL`, e.g. from `. .services/env`)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from strategy_worker.log import configure_logging
from strategy_worker.testing.simulation import (
    InvariantViolation,
    SimConfig,
    SimReport,
    run_simulation,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strategy_worker.testing.simulation")
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds from --seed")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--log", default="CRITICAL", help="log level of the runtime")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="",
        default=None,
        metavar="DSN",
        help="mirror every store call on PostgreSQL (default DSN: $DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    if args.postgres is not None:
        args.postgres = args.postgres or os.environ.get("DATABASE_URL", "")
        if not args.postgres:
            parser.error("--postgres needs a DSN or DATABASE_URL (. .services/env)")
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Set iteration order must not vary between runs: re-run with a fixed hash seed.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(
            sys.executable,
            [sys.executable, "-m", "strategy_worker.testing.simulation", *sys.argv[1:]],
        )
    configure_logging(args.log, json_output=False)
    started = time.perf_counter()
    steps = 0
    for seed in range(args.seed, args.seed + args.seeds):
        config = SimConfig(
            seed=seed, steps=args.steps, workers=args.workers, faults=not args.no_faults
        )
        try:
            if args.postgres is None:
                report = run_simulation(config)
            else:
                report = _run_postgres(config, args.postgres)
        except InvariantViolation as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            print(
                f"replay: {replay_command(config, postgres=args.postgres is not None)}",
                file=sys.stderr,
            )
            return 1
        steps += report.steps
        print(
            f"seed {seed}: ok {report.steps} steps, {report.executions} executions, "
            f"{report.orders} orders, {report.fills} fills, {report.events} events, "
            f"{report.crashes} crashes, {report.protective} protective orders "
            f"({'native' if report.native else 'emulated'} venue), "
            f"{report.virtual_seconds / 3600:.1f} virtual h, "
            f"{report.steps_per_second:.0f} steps/s, digest {report.digest}"
        )
    took = time.perf_counter() - started
    print(f"{args.seeds} seed(s), {steps} steps in {took:.1f} s: {steps / took:.0f} steps/s")
    return 0


def _run_postgres(config: SimConfig, dsn: str) -> SimReport:
    from strategy_worker.testing.simulation.postgres_variant import run_simulation_postgres

    result = run_simulation_postgres(config, dsn)
    calls = sum(result.forwarded.values())
    took = result.sim.wall_seconds - result.setup_seconds
    print(
        f"seed {config.seed}: postgres agreed after {result.comparisons} comparisons, "
        f"{calls} calls mirrored ({calls / took:.0f}/s), database set up in "
        f"{result.setup_seconds:.1f} s; refused alike: {result.refused or 'none'}"
    )
    return result.sim


def replay_command(config: SimConfig, *, postgres: bool = False) -> str:
    """The command that runs `config` again (exactly, on the memory store)."""
    flags = f"--seed {config.seed} --steps {config.steps} --workers {config.workers}"
    if not config.faults:
        flags += " --no-faults"
    command = f"PYTHONHASHSEED=0 .venv/bin/python -m strategy_worker.testing.simulation {flags}"
    if postgres:  # not an exact replay on a real server (see postgres_variant.py)
        return f". .services/env && {command} --postgres"
    return command


if __name__ == "__main__":
    sys.exit(main())
