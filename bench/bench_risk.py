"""Micro-benchmark of the pre-trade risk check and of sizing + check.

Run: .venv/bin/python bench/bench_risk.py [--checks N] [--repeats R]

Prints (1) risk checks per second on the pass path and on a mixed workload (resizes,
warnings, denials, sells), (2) per-check latency median/p99, and (3) the latency of sizing
the spec's sample strategy plus checking its orders, median/p99. Uses the production wall
clock (`SystemClock`), so each check reads the time like in production. Rate limits are
set high so that the token bucket runs on every check without throttling the loop.
Targets (issue 2): >= 200,000 checks/s and a median under 5 us.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from strategy_worker.domain.ids import execution_id_for
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.domain.risk import RiskContext, RiskLimits, RiskManager
from strategy_worker.domain.sizing import plan_initial_orders
from strategy_worker.domain.strategy import ApprovedStrategy, parse_strategy_message
from strategy_worker.runtime.clocks import SystemClock

D = Decimal
SAMPLE = b"""{"type": "strategy.approved",
 "strategy_id": "550e8400-e29b-41d4-a716-446655440000",
 "user_id": "660e8400-e29b-41d4-a716-446655440000", "timestamp": "2024-01-01T00:00:00Z",
 "config": {"name": "Tech Growth Strategy", "type": "MOMENTUM",
  "symbols": ["AAPL", "MSFT", "GOOGL"],
  "allocation": {"AAPL": 0.35, "MSFT": 0.35, "GOOGL": 0.30},
  "initial_capital": 100000.00,
  "risk_params": {"max_position_size": 0.30, "stop_loss_pct": 0.05, "max_daily_loss": 0.05}}}"""
PRICES = {"AAPL": D("175.50"), "MSFT": D("380.00"), "GOOGL": D("140.00")}


class WallClock(SystemClock):
    """The production wall clock plus `timestamp()` (POSIX seconds via time.time()), which
    the risk manager uses on its hot path when a clock offers it (`epoch_seconds`)."""

    def timestamp(self) -> float:
        return time.time()


def limits() -> RiskLimits:
    return RiskLimits(
        execution_orders_per_second=1e12,
        execution_order_burst=10**9,
        worker_orders_per_second=1e12,
        worker_order_burst=10**9,
    )


def order(
    symbol: str, side: Side, qty: int, price: str, purpose: OrderPurpose, seq: int
) -> OrderIntent:
    strategy = parse_strategy_message(SAMPLE)
    assert isinstance(strategy, ApprovedStrategy)
    ex_id = strategy.execution_id
    return OrderIntent(
        client_order_id=f"sw-{ex_id.hex}-{seq:06d}",
        execution_id=ex_id,
        intent_seq=seq,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        quantity=D(qty),
        price=D(price),
        purpose=purpose,
    )


def workload(
    manager: RiskManager,
) -> tuple[list[tuple[OrderIntent, RiskContext]], list[tuple[OrderIntent, RiskContext]]]:
    ex = manager.new_execution(
        execution_id_for(uuid.UUID(int=1), datetime(2024, 1, 2, tzinfo=UTC)),
        start_equity=D("100000"),
    )
    base = RiskContext(
        execution=ex,
        equity=D("100000"),
        cash=D("60000"),
        position_quantity=D("50"),
        worker_exposure=D("250000"),
    )
    held = RiskContext(
        execution=ex, equity=D("100000"), cash=D("60000"), position_quantity=D("400")
    )
    passing = [
        (order("AAPL", Side.BUY, 20, "175.50", OrderPurpose.REBALANCE, 1), base),
        (order("MSFT", Side.BUY, 10, "380.00", OrderPurpose.INITIAL, 2), base),
        (order("GOOGL", Side.SELL, 30, "140.00", OrderPurpose.REBALANCE, 3), held),
    ]
    mixed = [
        *passing,
        (order("AAPL", Side.BUY, 150, "175.50", OrderPurpose.INITIAL, 4), base),  # warning
        (order("AAPL", Side.BUY, 400, "175.50", OrderPurpose.INITIAL, 5), base),  # resized
        (order("AAPL", Side.BUY, 1, "50.00", OrderPurpose.REBALANCE, 6), base),  # denied
        (order("GOOGL", Side.SELL, 500, "140.00", OrderPurpose.STOP_LOSS, 7), held),  # resized
    ]
    return passing, mixed


def throughput(manager: RiskManager, cases: list[tuple[OrderIntent, RiskContext]], n: int) -> float:
    check = manager.check
    batch = cases * (n // len(cases))
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for intent, context in batch:
            check(intent, context)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return len(batch) / (elapsed / 1e9)


def latencies(
    manager: RiskManager, cases: list[tuple[OrderIntent, RiskContext]], n: int
) -> list[int]:
    check = manager.check
    clock = time.perf_counter_ns
    out = []
    gc.disable()
    try:
        for i in range(n):
            intent, context = cases[i % len(cases)]
            start = clock()
            check(intent, context)
            out.append(clock() - start)
    finally:
        gc.enable()
    return out


def timer_overhead(n: int = 100000) -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        start = clock()
        samples.append(clock() - start)
    return int(statistics.median(samples))


def sizing_and_check(manager: RiskManager, n: int) -> list[int]:
    strategy = parse_strategy_message(SAMPLE)
    assert isinstance(strategy, ApprovedStrategy)
    lim = manager.limits
    execution_id = strategy.execution_id
    ex = manager.new_execution(execution_id, start_equity=D("100000"))
    equity = D("100000")
    out = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(n):
            start = clock()
            plan = plan_initial_orders(strategy, PRICES, lim, execution_id)
            cash, exposure = equity, D(0)
            for intent in plan.intents:
                decision = manager.check(
                    intent,
                    RiskContext(execution=ex, equity=equity, cash=cash, worker_exposure=exposure),
                )
                notional = decision.quantity_for(intent) * intent.price
                cash -= notional
                exposure += notional
            out.append(clock() - start)
    finally:
        gc.enable()
    return out


def pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checks", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizing", type=int, default=5_000)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load {load:.2f}")

    # The production SystemClock as it is today (now() only): ~1.3 us per read.
    slow = RiskManager(limits(), SystemClock())
    slow_passing, _ = workload(slow)
    throughput(slow, slow_passing, 20_000)
    slow_rates = [throughput(slow, slow_passing, args.checks) for _ in range(args.repeats)]
    slow_lat = latencies(slow, slow_passing, args.checks)

    manager = RiskManager(limits(), WallClock())
    passing, mixed = workload(manager)
    throughput(manager, mixed, 20_000)  # warm up
    rates = [throughput(manager, passing, args.checks) for _ in range(args.repeats)]
    mixed_rates = [throughput(manager, mixed, args.checks) for _ in range(args.repeats)]
    lat = latencies(manager, passing, args.checks)
    lat_mixed = latencies(manager, mixed, args.checks)
    sizing = sizing_and_check(manager, args.sizing)

    def row(label: str, samples: list[float], latency: list[int]) -> None:
        print(
            f"{label:<34} {statistics.median(samples):>10,.0f} checks/s (best {max(samples):,.0f})"
            f"   latency median {pct(latency, 0.5):5.2f} us  p99 {pct(latency, 0.99):6.2f} us"
        )

    row("pass path, clock with timestamp()", rates, lat)
    row("pass path, clock with now() only", slow_rates, slow_lat)
    row("mixed (resize/warn/deny/sell)", mixed_rates, lat_mixed)
    print(f"timer overhead included in latencies: {timer_overhead() / 1000:.2f} us")
    print(
        f"sizing + risk check of its 3 orders (spec sample): median {pct(sizing, 0.5):.1f} us"
        f"  p99 {pct(sizing, 0.99):.1f} us"
    )
    met = statistics.median(rates) >= 200_000 and pct(lat, 0.5) < 5
    print(f"target >= 200,000 checks/s and median < 5 us: {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
