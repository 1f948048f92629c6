"""Bars per second through the signal path: 10 years of daily bars x 5 symbols.

Run: .venv/bin/python bench/bench_signals.py [--years 10] [--symbols 5] [--repeats 3]

Measures, on the same bars in the same run (best of `--repeats`):
- `read`: a CSV of OHLCV bars read by `BarFile` (what paper mode replays);
- `talipp`: the bare talipp indicators the rules need (RSI(14), MACD(12,26,9)), fed floats:
  the floor an engine built on them can reach;
- `engine`: the full per-bar path: `BarGate.accept` (one bar per batch, the worst case),
  then `SignalEngine.on_bar` for the spec's MOMENTUM shorthand (RSI > 40 and MACD above its
  signal) with an exit rule (RSI(14) < 30), entering and exiting on every fired decision;
- `engine x10`: ten executions with the same rules reading every bar (one worker's load).
Prints bars/s for each and the engine's cost as a ratio of bare talipp's.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from talipp.indicators import MACD, RSI

from strategy_worker.adapters.bar_files import BarFile
from strategy_worker.domain.signals.acceptance import BarGate
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.decisions import Action
from strategy_worker.domain.signals.engine import SignalEngine
from strategy_worker.domain.signals.parsing import rule_set_or_none
from strategy_worker.domain.signals.rules import RuleKind, StrategyRules
from strategy_worker.domain.signals.synthetic import random_bars

SYMBOLS = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")
ENTRY = {"indicators": ["RSI", "MACD"], "rsi_threshold": 40, "macd_signal": "bullish"}
EXIT = {"all": [{"indicator": "RSI", "period": 14, "op": "<", "value": 30}]}


def _bars(years: int, symbols: int) -> list[Bar]:
    days = 252 * years
    bars = [b for i, s in enumerate(SYMBOLS[:symbols]) for b in random_bars(days, seed=i, symbol=s)]
    return sorted(bars, key=lambda b: (b.end, b.symbol))


def _rules() -> StrategyRules:
    def parse(kind: RuleKind, obj: dict[str, object]) -> object:
        return rule_set_or_none(obj, kind=kind, strategy_type="MOMENTUM", path="bench")

    return StrategyRules(entry=parse(RuleKind.ENTRY, ENTRY), exit=parse(RuleKind.EXIT, EXIT))  # type: ignore[arg-type]


def _talipp(bars: list[Bar]) -> None:
    state = {s: (RSI(14), MACD(12, 26, 9)) for s in SYMBOLS}
    for bar in bars:
        rsi, macd = state[bar.symbol]
        close = float(bar.close)
        rsi.add(close)
        macd.add(close)


def _engine(bars: list[Bar], executions: int = 1) -> int:
    rules = _rules()
    engines = [SignalEngine(rules, SYMBOLS) for _ in range(executions)]
    gate = BarGate()
    fired = 0
    for bar in bars:
        for accepted in gate.accept((bar,), now=bar.end).accepted:
            for engine in engines:
                for decision in engine.on_bar(accepted, now=accepted.end):
                    if decision.action is Action.OPEN:
                        engine.mark_entered(decision.symbol)
                        fired += 1
                    elif decision.action is Action.CLOSE:
                        engine.mark_exited(decision.symbol)
                        fired += 1
    return fired


def _write_csv(bars: list[Bar], path: Path) -> None:
    with path.open("w") as out:
        out.write("date,symbol,open,high,low,close,volume\n")
        for b in bars:
            out.write(
                f"{b.start.date()},{b.symbol},{b.open},{b.high},{b.low},{b.close},{b.volume}\n"
            )


def _best(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=5, choices=range(1, 6))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bars = _bars(args.years, args.symbols)
    load = os.getloadavg()[0]
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load {load:.2f}")
    print(f"{len(bars)} daily bars: {args.years} years x {args.symbols} symbols")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "bars.csv"
        _write_csv(bars, csv)
        read = _best(lambda: BarFile(csv), args.repeats)
    fired = _engine(bars)
    results = {
        "read (BarFile)": read,
        "talipp (RSI+MACD)": _best(lambda: _talipp(bars), args.repeats),
        "engine (gate + rules)": _best(lambda: _engine(bars), args.repeats),
        "engine x10 executions": _best(lambda: _engine(bars, 10), args.repeats),
    }
    for name, seconds in results.items():
        per = len(bars) * (10 if "x10" in name else 1)
        print(f"{name:24s} {per / seconds:12,.0f} bars/s  ({seconds * 1000:8.1f} ms)")
    ratio = results["engine (gate + rules)"] / results["talipp (RSI+MACD)"]
    print(f"engine / bare talipp: {ratio:.2f}x the time; {fired} entries and exits fired")


if __name__ == "__main__":
    main()
