"""Paper mode replaying a bar file on its own timestamps, as fast as the engine goes (issue
14): the README's command for the spec's sample on examples/daily-bars.csv."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from strategy_worker.adapters.bar_files import BarFile

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BARS = ROOT / "examples" / "daily-bars.csv"
WARMUP = 200  # docs/signals.md: the sample's MACD(12,26,9) decides from its 200th bar


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], list[dict]]:
    work = tmp_path_factory.mktemp("paper-bars")
    events = work / "events.jsonl"
    done = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "strategy-worker"),
            "paper",
            "examples/tech-growth.json",
            "--prices",
            str(BARS),
            "--speed",
            "max",
            "--duration",
            "1100d",
            "--json",
            "--events",
            str(events),
            "--data-dir",
            str(work / "db"),
        ],
        cwd=ROOT,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary = json.loads(done.stdout, parse_float=Decimal)
    lines = events.read_text(encoding="utf-8").splitlines()
    return summary, [json.loads(line, parse_float=Decimal) for line in lines]


def test_the_replay_runs_on_the_files_own_clock_to_its_end_and_replays_consistently(
    replay: tuple[dict[str, object], list[dict]],
) -> None:
    summary, events = replay
    (execution,) = summary["executions"]  # type: ignore[misc]
    assert execution["consistent"] is True
    assert execution["orders"] > 0
    stats = summary["replay"]
    assert stats["bars"] == len(BarFile(BARS))  # type: ignore[index]
    started = next(e for e in events if e["type"].endswith(".started"))
    # Not 2024-01-02 14:30 any more: the file's first bar.
    assert started["timestamp"] == "2021-01-04T00:00:00Z"
    assert started["awaiting_entry"] == ["AAPL", "GOOGL", "MSFT"]


def test_no_buy_before_its_entry_fired_and_none_during_the_warm_up(
    replay: tuple[dict[str, object], list[dict]],
) -> None:
    _, events = replay
    bars = list(BarFile(BARS))
    by_symbol: dict[str, list[datetime]] = {}
    for bar in bars:
        by_symbol.setdefault(bar.symbol, []).append(bar.end)
    fired: dict[str, list[str]] = {}
    buys = 0
    for event in events:
        kind = event["type"].rsplit(".", 1)[-1]
        if kind == "signal_decision" and event["action"] == "open" and event["gate"] is None:
            fired.setdefault(event["symbol"], []).append(event["timestamp"])
        if kind == "order_submitted" and event["purpose"] == "INITIAL":
            buys += 1
            symbol = event["symbol"]
            assert fired.get(symbol), f"a buy of {symbol} before its entry signal fired"
            first = datetime.fromisoformat(fired[symbol][0].replace("Z", "+00:00"))
            assert first >= by_symbol[symbol][WARMUP - 1].astimezone(UTC)
    assert buys >= 3  # each symbol entered at least once
    decisions = [e for e in events if e["type"].endswith(".signal_decision")]
    assert {e["outcome"] for e in decisions} >= {"warmup", "fired"}
