"""Micro-benchmark of the protection engine on one price update (issue 16's storm, engine only).

Run: .venv/bin/python bench/bench_protection.py [--executions N] [--repeats R]

N executions each hold 100 AAPL bought at 100.00 with a stop-loss 5%, a trailing stop 5%
and a take-profit 50%, emulated; marks ratchet the trail to 120. Then one price update to
110 fires every trailing stop. Measured per execution: `on_price` + `decide` (the decision
and its exit intent) and `to_json` (the state the runtime commits with the intent), as
p50/p99 and the time to the last decision; and the same for a quiet mark (nothing fires:
`on_price` alone, which says no `decide` is due).
Baseline in the same run: today's fixed stop-loss step, `StopLossMonitor.scan`, on the same
positions and marks (a stop at 5% fires at 94). This is the engine alone: the runtime's
commit and the OMS round trip are not included (see bench/run.sh for those).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.positions import Position
from strategy_worker.domain.protection import ProtectionBook, ProtectionSpec
from strategy_worker.domain.risk.stop_loss import StopLossMonitor
from strategy_worker.domain.strategy import ProtectionPlacement

D = Decimal
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SPEC = ProtectionSpec(
    stop_loss_pct=D("0.05"),
    trailing_stop_pct=D("0.05"),
    take_profit_pct=D("0.5"),
    placement=ProtectionPlacement.EMULATED,
)


def books(count: int) -> list[ProtectionBook]:
    out = []
    for i in range(count):
        book = ProtectionBook(uuid.UUID(int=i + 1), SPEC)
        book.on_position("AAPL", D(100), D(10000))
        for step, mark in enumerate(("105", "112", "120")):
            book.on_price("AAPL", D(mark), T0 + timedelta(seconds=step))
        book.decide(at=T0 + timedelta(seconds=3), next_seq=2)
        book.to_json()
        out.append(book)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_books(all_books: list[ProtectionBook], mark: Decimal, at: datetime) -> dict[str, float]:
    per: list[float] = []
    persist: list[float] = []
    exits = 0
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    try:
        for book in all_books:
            t = time.perf_counter()
            if book.on_price("AAPL", mark, at):  # a trigger latched: decide now
                step = book.decide(at=at, next_seq=2)
                t2 = time.perf_counter()
                json.dumps(book.to_json())  # what the runtime commits with the exit
                persist.append(time.perf_counter() - t2)
                exits += len(step.intents)
            else:
                t2 = time.perf_counter()  # a quiet mark: nothing to decide or to write
            per.append(t2 - t)
        total = time.perf_counter() - started
    finally:
        gc.enable()
    return {
        "exits": exits,
        "p50_us": percentile(per, 0.5) * 1e6,
        "p99_us": percentile(per, 0.99) * 1e6,
        "persist_p50_us": percentile(persist, 0.5) * 1e6 if persist else 0.0,
        "decide_s": sum(per),
        "last_s": total,
    }


def run_baseline(count: int, mark: Decimal) -> dict[str, float]:
    monitors = [StopLossMonitor(D("0.05"), D("0.02")) for _ in range(count)]
    position = {"AAPL": Position(symbol="AAPL", quantity=D(100), cost_basis=D(10000))}
    per: list[float] = []
    exits = 0
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    try:
        for i, monitor in enumerate(monitors):
            t = time.perf_counter()
            scan = monitor.scan(
                position, {"AAPL": mark}, execution_id=uuid.UUID(int=i + 1), first_seq=2
            )
            per.append(time.perf_counter() - t)
            exits += len(scan.intents)
        total = time.perf_counter() - started
    finally:
        gc.enable()
    return {
        "exits": exits,
        "p50_us": percentile(per, 0.5) * 1e6,
        "p99_us": percentile(per, 0.99) * 1e6,
        "last_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"python {platform.python_version()} on {platform.machine()}; {args.executions} executions"
    )
    for repeat in range(args.repeats):
        quiet = run_books(books(args.executions), D("119"), T0 + timedelta(seconds=10))
        storm = run_books(books(args.executions), D("110"), T0 + timedelta(seconds=10))
        base_quiet = run_baseline(args.executions, D("119"))
        base_storm = run_baseline(args.executions, D("94"))
        assert storm["exits"] == args.executions  # every trailing stop fired, once
        assert base_storm["exits"] == args.executions
        assert quiet["exits"] == base_quiet["exits"] == 0
        print(
            f"run {repeat + 1}: storm (every trail fires): on_price+decide p50 "
            f"{storm['p50_us']:.1f} us, p99 {storm['p99_us']:.1f} us, sum "
            f"{storm['decide_s'] * 1000:.0f} ms; with to_json (p50 "
            f"{storm['persist_p50_us']:.1f} us) the last after {storm['last_s'] * 1000:.0f} ms; "
            f"baseline StopLossMonitor.scan p50 {base_storm['p50_us']:.1f} us, last after "
            f"{base_storm['last_s'] * 1000:.0f} ms; ratio (decisions) "
            f"{storm['decide_s'] / base_storm['last_s']:.2f}x"
        )
        print(
            f"run {repeat + 1}: quiet mark: p50 {quiet['p50_us']:.1f} us, p99 "
            f"{quiet['p99_us']:.1f} us, all after {quiet['last_s'] * 1000:.0f} ms; baseline "
            f"p50 {base_quiet['p50_us']:.1f} us, all after {base_quiet['last_s'] * 1000:.0f} ms; "
            f"ratio {quiet['last_s'] / base_quiet['last_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
