"""The bench helpers: percentiles, the strategy generator (valid for the worker's parser,
deterministic, 3-10 symbols within the position limit) and the report renderer."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

from strategy_worker.domain.strategy import ApprovedStrategy, parse_strategy_message

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str) -> ModuleType:
    """Load a bench script as a module under a private name (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"sw_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load("harness")
report = _load("report")


def test_pct_when_nearest_rank_then_exact_order_statistics() -> None:
    values = [float(v) for v in range(1, 101)]
    assert harness.pct(values, 0.50) == 50.0
    assert harness.pct(values, 0.99) == 99.0
    assert harness.pct(values, 1.0) == 100.0
    assert harness.pct([7.0], 0.99) == 7.0


def test_summary_ms_when_seconds_then_milliseconds() -> None:
    summary = harness.summary_ms([0.001, 0.002, 0.010])
    assert summary["n"] == 3
    assert summary["p50_ms"] == 2.0
    assert summary["max_ms"] == 10.0
    assert harness.summary_ms([]) == {"n": 0}


def test_strategy_payload_when_generated_then_the_worker_accepts_it() -> None:
    universe = harness.Universe.make(50)
    rng = random.Random(5)
    for _ in range(50):
        _sid, payload = harness.strategy_payload(rng, universe.symbols)
        parsed = parse_strategy_message(payload)
        assert isinstance(parsed, ApprovedStrategy), parsed
        symbols = parsed.config.symbols
        assert 3 <= len(symbols) <= 10
        assert all(w <= Decimal("0.30") for w in parsed.config.allocation.values())
        assert harness.execution_id_of(payload) == parsed.execution_id


def test_strategy_payload_when_same_seed_then_same_messages() -> None:
    universe = harness.Universe.make(20)
    first = [harness.strategy_payload(random.Random(9), universe.symbols)[1] for _ in range(3)]
    again = [harness.strategy_payload(random.Random(9), universe.symbols)[1] for _ in range(3)]
    assert first == again
    assert json.loads(first[0])["type"] == "strategy.approved"


def test_render_when_target_missed_then_says_miss_with_ratio() -> None:
    text = report.render(
        {
            "mode": "quick",
            "baselines": {"grpc": {"stream_per_s": 1000}},
            "throughput": {"orders_per_s": 300, "strategies_per_s": 50},
        }
    )
    assert "0.30x of raw per-order stream" in text
    assert "MISS" in text


def test_render_storm_when_last_close_is_late_then_says_miss() -> None:
    text = report.render(
        {
            "mode": "quick",
            "storm": {
                "executions": 10,
                "positions": 50,
                "first_close_ms": 12.0,
                "last_close_ms": 12_500.0,
                "closes_at_oms": 50,
                "closes_durable_first": 50,
            },
        }
    )
    assert "< 50 ms: PASS" in text
    assert "< 10 s: MISS" in text


def test_lag_between_two_snapshots_interpolates_within_buckets() -> None:
    before = {"0.001": 10.0, "0.01": 10.0, "0.1": 10.0, "+Inf": 10.0, "sum": 0.005}
    # 100 more samples: 90 under 1 ms, 9 between 1 and 10 ms, 1 between 10 and 100 ms.
    after = {"0.001": 100.0, "0.01": 109.0, "0.1": 110.0, "+Inf": 110.0, "sum": 0.105}

    lag = harness.lag_between(before, after)

    assert lag["samples"] == 100
    assert lag["p50_ms"] < 1.0
    assert 1.0 <= lag["p99_ms"] <= 10.0
    assert lag["share_over_10ms"] == 0.01
    assert lag["mean_ms"] == 1.0


def test_worker_config_when_overridden_then_the_override_wins() -> None:
    harness.CONFIG_OVERRIDES["kafka.producer_linger_ms"] = "0"
    try:
        config = harness.worker_config(
            database_url="postgresql://u@h/db",
            redis_url="redis://h/0",
            kafka="h:9092",
            oms_port=1,
            run_tag="t",
            redis_prefix="p:",
        )
    finally:
        harness.CONFIG_OVERRIDES.clear()
    assert config["kafka"]["producer_linger_ms"] == "0"
    assert config["kafka"]["topics"]["approved"] == "bench.t.approved"
