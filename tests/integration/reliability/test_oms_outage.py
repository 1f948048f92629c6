"""The OMS refuses for 30 s, then stalls for 30 s (it does the work but holds its answers),
mid-run. Checked: no order lost or sent twice, retries bounded by max_attempts, the breaker
opens and closes again, executions carry on afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.oms_grpc.breaker import BreakerState
from strategy_worker.adapters.oms_grpc.config import BreakerConfig, RetryConfig
from strategy_worker.errors import StoreError
from strategy_worker.oms_sim.server import OmsSimServer

from .harness import (
    Rig,
    assert_never_twice_never_lost,
    encode,
    eventually,
    execution_of,
    fetch_all,
    ledger,
    oms_client_config,
    open_rig,
    record_figures,
    strategy_message,
    unique,
)

pytestmark = pytest.mark.timeout(240)

REFUSE_S = 30.0
STALL_S = 30.0
MAX_ATTEMPTS = 3


async def test_oms_refusing_then_stalling_mid_run_loses_and_duplicates_nothing(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange
    run = unique("outage")
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=f"{run}-w",
        reconcile_interval=0.5,
        oms_config=oms_client_config(
            oms_server.port,
            timeout=0.5,
            retry=RetryConfig(max_attempts=MAX_ATTEMPTS, backoff_ms=50, max_backoff_ms=200),
            breaker=BreakerConfig(failure_threshold=3, reset_timeout_s=1.0),
        ),
    )
    messages = [strategy_message(i, run=run) for i in range(7)]
    ids = [execution_of(m) for m in messages]
    transitions: list[str] = []
    watcher = asyncio.create_task(_watch_breaker(rig, transitions))
    try:
        for message in messages[:2]:
            await rig.worker.handle_strategy(encode(message), "test")
        await eventually(lambda: _filled(rig, ids[:2]), 10, "first executions filled")

        # Act: refuse every call, then hold every answer after doing the work.
        oms_server.faults.refuse(True)
        for message in messages[2:4]:
            await rig.worker.handle_strategy(encode(message), "test")
        await asyncio.sleep(REFUSE_S)
        oms_server.faults.refuse(False)
        oms_server.faults.stall(after_processing=True)
        for message in messages[4:6]:
            await rig.worker.handle_strategy(encode(message), "test")
        await asyncio.sleep(STALL_S)
        oms_server.faults.clear_stall()
        cleared = time.monotonic()
        await eventually(lambda: _filled(rig, ids[:6]), 30, "every order filled after the outage")
        recovered_in = time.monotonic() - cleared
        await rig.worker.handle_strategy(encode(messages[6]), "test")  # carries on
        await eventually(lambda: _filled(rig, ids), 10, "a new execution after the outage")
        book = await ledger(migrated_dsn, oms_server)
        statuses = await fetch_all(migrated_dsn, "SELECT status FROM strategy_executions")
        final_state = rig.oms.breaker.state
    finally:
        watcher.cancel()
        await rig.close()

    # Assert
    counts = assert_never_twice_never_lost(book)
    assert set(book.db_orders) == set(book.oms_orders)
    assert {r["status"] for r in statuses} == {"active"}
    assert "OPEN" in transitions
    assert final_state is BreakerState.CLOSED
    metrics = _client_metrics(rig.registry)
    logical_calls = metrics["ok_calls"] + metrics["failed_for_good"]
    assert metrics["retries"] <= (MAX_ATTEMPTS - 1) * logical_calls
    record_figures(
        "oms_outage",
        {
            "refuse_s": REFUSE_S,
            "stall_s": STALL_S,
            "breaker_transitions": transitions,
            "recovered_after_clear_s": round(recovered_in, 2),
            **metrics,
            **counts,
        },
    )


async def _filled(rig: Rig, ids: list[uuid.UUID]) -> bool:
    try:
        for execution_id in ids:
            orders = await rig.store.get_orders(execution_id)
            if not orders or any(o.status.value != "FILLED" for o in orders):
                return False
    except StoreError:
        return False
    return True


async def _watch_breaker(rig: Rig, transitions: list[str]) -> None:
    last = None
    while True:
        state = rig.oms.breaker.state
        if state is not last:
            transitions.append(state.name)
            last = state
        await asyncio.sleep(0.01)


def _client_metrics(registry: CollectorRegistry) -> dict[str, int]:
    sums: Counter[str] = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            if sample.name == "oms_client_retries_total":
                sums["retries"] += int(sample.value)
            elif sample.name == "oms_client_failures_total":
                sums["failed_for_good"] += int(sample.value)
                if sample.labels.get("code") == "CIRCUIT_OPEN":
                    sums["refused_by_open_breaker"] += int(sample.value)
            elif sample.name == "oms_client_calls_total":
                sums["attempts"] += int(sample.value)
                if sample.labels.get("code") == "OK":
                    sums["ok_calls"] += int(sample.value)
    return dict(sums)
