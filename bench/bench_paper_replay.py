"""Bars per second through the whole worker: a paper replay of 10 years of daily bars x 5
symbols with `--speed max` (issue 14).

Run: .venv/bin/python bench/bench_paper_replay.py [--years 10] [--symbols 5] [--repeats 1]

What is measured, on the same bars in the same run:
- `paper --speed max`: `run_paper` (the production wiring, the embedded PostgreSQL, the
  paper OMS over gRPC): every bar through the bar feed, the gate, `market_bars`, the
  execution's engine and a step per instant, decisions committed with the orders they
  cause, fills booked, the monitor and the rebalancer waking at each instant. The strategy
  is the spec's MOMENTUM shorthand (RSI(14) > 40 and MACD above its signal) with an exit
  rule (RSI(14) < 30), equal weights, the sample's 5% stop-loss. Timed from the first bar
  to the last one done with (the embedded database's start is not counted);
- `engine only`: the same bars through `BarGate` and `SignalEngine` alone, in this process
  (`bench_signals.py`'s engine path): the floor the replay stands on.
Prints bars/s for both and the replay's cost as a ratio of the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_signals import SYMBOLS, _bars, _engine, _write_csv
from strategy_worker.config import WorkerConfig
from strategy_worker.log import configure_logging
from strategy_worker.paper.app import PaperOptions, run_paper

ENTRY = {"indicators": ["RSI", "MACD"], "rsi_threshold": 40, "macd_signal": "bullish"}
EXIT = {"all": [{"indicator": "RSI", "period": 14, "op": "<", "value": 30}]}


def _strategy(symbols: tuple[str, ...], path: Path) -> None:
    weight = f"{0.95 / len(symbols):.2f}"
    allocation = ", ".join(f'"{s}": {weight}' for s in symbols)
    text = (
        '{"type": "strategy.approved", "strategy_id": "550e8400-e29b-41d4-a716-446655440009",'
        ' "user_id": "660e8400-e29b-41d4-a716-446655440000", "timestamp": "2019-12-31T00:00:00Z",'
        ' "config": {"name": "bench", "type": "MOMENTUM", "symbols": '
        + json.dumps(list(symbols))
        + ', "allocation": {'
        + allocation
        + '}, "initial_capital": 1000000.00, "risk_params": {"stop_loss_pct": 0.05},'
        + ' "entry_rules": '
        + json.dumps(ENTRY)
        + ', "exit_rules": '
        + json.dumps(EXIT)
        + "}}"
    )
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=5, choices=range(1, 6))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    configure_logging("ERROR", json_output=True)
    bars = _bars(args.years, args.symbols)
    symbols = SYMBOLS[: args.symbols]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{len(bars)} daily bars: {args.years} years x {args.symbols} symbols")
    replays: list[tuple[float, int, int, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        csv, strategy = Path(tmp) / "bars.csv", Path(tmp) / "strategy.json"
        _write_csv(bars, csv)
        _strategy(symbols, strategy)
        for _ in range(args.repeats):
            options = PaperOptions(
                strategies=[strategy],
                duration_s=(args.years * 366 + 30) * 86400.0,
                speed=None,
                prices_file=csv,
                live=False,
                config=WorkerConfig(),
            )
            began = time.perf_counter()
            result = asyncio.run(run_paper(options))
            total = time.perf_counter() - began
            assert result.replay is not None
            (summary,) = result.summaries
            replays.append(
                (result.replay.seconds, result.replay.bars, summary.orders, result.consistent)
            )
            print(f"  run: {total:.1f} s in all (embedded database and shutdown included)")
    best = min(replays)
    seconds, replayed, orders, consistent = best
    engine_times = []
    for _ in range(3):
        began = time.perf_counter()
        _engine(bars)
        engine_times.append(time.perf_counter() - began)
    engine = min(engine_times)
    print(
        f"paper --speed max   {replayed / seconds:10,.0f} bars/s  ({seconds:6.1f} s; "
        f"{orders} orders, fills replay {'ok' if consistent else 'MISMATCH'})"
    )
    print(f"engine only         {len(bars) / engine:10,.0f} bars/s  ({engine:6.2f} s)")
    print(f"replay / engine: {seconds / engine:.1f}x the time")


if __name__ == "__main__":
    main()
