"""The daily loss budget survives a crash: start-of-day equity and the halt are persisted,
so a restarted worker neither forgets the halt nor re-bases the day on a lower equity."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.runtime.runner import ExecutionRunner

from .harness import (
    PRICES,
    Rig,
    encode,
    eventually,
    execution_of,
    fetch_all,
    open_rig,
    record_figures,
    seed_prices,
    strategy_message,
    unique,
)

pytestmark = pytest.mark.timeout(60)


async def test_halted_by_daily_loss_stays_halted_with_the_same_day_start_after_a_crash(
    migrated_dsn: str,
    redis_url: str,
    redis_client: Redis,
    price_prefix: str,
    oms_server: OmsSimServer,
) -> None:
    # Arrange: an execution filled at the harness prices.
    run = unique("dailyloss")
    common = {
        "dsn": migrated_dsn,
        "oms_port": oms_server.port,
        "redis_url": redis_url,
        "price_prefix": price_prefix,
        "owner_id": f"{run}-w",
    }
    message = strategy_message(0, run=run)
    execution_id = execution_of(message)
    first = await open_rig(**common)
    try:
        await first.worker.handle_strategy(encode(message), "test")
        await eventually(lambda: _flat(first, execution_id), 10, "initial orders filled")
        # Prices fall 20%: far beyond the 5% daily loss limit.
        await seed_prices(
            redis_client, price_prefix, {s: p * Decimal("0.8") for s, p in PRICES.items()}
        )
        await first.worker.monitor.cycle()
        halted_before = _runner(first, execution_id).model.risk
        day_start = halted_before.day_start_equity
        assert halted_before.state.value == "HALTED"
    finally:
        await first.crash()

    # Act: restart (same worker id) after prices recovered, still the same trading day.
    await seed_prices(redis_client, price_prefix)
    second = await open_rig(**common)
    try:
        runner = _runner(second, execution_id)
        await second.worker.monitor.cycle()
        after = runner.model.risk  # the model the cycle's commit left (a new one each commit)
        stored = await fetch_all(
            migrated_dsn,
            "SELECT trading_state, day_start_equity FROM strategy_executions "
            "WHERE execution_id = $1",
            execution_id,
        )
    finally:
        await second.close()

    # Assert
    assert after.state.value == "HALTED"
    assert after.day_start_equity == day_start
    assert stored[0]["trading_state"] == "HALTED"
    assert stored[0]["day_start_equity"] == day_start
    record_figures(
        "daily_loss_restart",
        {"day_start_equity": str(day_start), "halted_after_restart": True},
    )


def _runner(rig: Rig, execution_id: uuid.UUID) -> ExecutionRunner:
    runner = rig.worker.book.get(execution_id)
    assert runner is not None, "the worker does not drive the execution"
    return runner


async def _flat(rig, execution_id) -> bool:  # type: ignore[no-untyped-def]
    orders = await rig.store.get_orders(execution_id)
    return bool(orders) and all(o.status.value == "FILLED" for o in orders)
