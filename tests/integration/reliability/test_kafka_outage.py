"""Kafka stopped mid-run (the harness's broker, started again after): the worker process
keeps trading, a stop-loss fires and fills while the broker is away, and once it is back
every event of the run arrives; no execution fails, nothing is sent twice or lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis

from strategy_worker.adapters.redis_prices import write_price
from strategy_worker.oms_sim.server import OmsSimServer

from ..servers import SharedKafka
from .harness import (
    PRICES,
    assert_never_twice_never_lost,
    encode,
    eventually,
    execution_of,
    fetch_all,
    ledger,
    read_events,
    record_figures,
    spawn_worker,
    strategy_message,
    unique,
    worker_config_file,
)
from .test_crash_recovery import converged, produce, topics, worker_env

pytestmark = pytest.mark.timeout(240)

TopicFactory = Callable[..., Awaitable[str]]
STOP_LOSS_PCT = "0.05"
OUTAGE_S = 15.0


async def test_kafka_down_mid_run_then_trading_carries_on_and_every_event_arrives_after(
    migrated_dsn: str,
    redis_url: str,
    redis_client: Redis,
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    price_prefix: str,
    oms_server: OmsSimServer,
    kafka_control: SharedKafka,
    tmp_path: Path,
) -> None:
    # Arrange: two executions with a 5% stop-loss, filled and converged.
    run = unique("kafkadown")
    names = await topics(make_topic)
    messages = [strategy_message(i, run=run) for i in range(2)]
    payloads = [_with_stop_loss(encode(m)) for m in messages]
    ids = [execution_of(m) for m in messages]
    await produce(kafka_bootstrap, names["approved"], payloads)
    config = worker_config_file(
        tmp_path / "worker.yaml",
        topics=names,
        group=f"{run}-g",
        oms_port=oms_server.port,
        price_prefix=price_prefix,
        position_check_interval=0.5,
    )
    # Kafka calls give up after 3 s, so an outage of OUTAGE_S outlasts every one of them.
    settings = yaml.safe_load(config.read_text())
    settings["kafka"]["request_timeout_ms"] = 3000
    # The paper OMS walks its own prices here, not Redis's: a stop resting there would not
    # see the falls below, and the worker would take over only after the native grace.
    settings["risk"] = {"protection": "emulated"}
    config.write_text(yaml.safe_dump(settings))
    worker_id = f"{run}-w"
    proc = spawn_worker(
        config,
        worker_id=worker_id,
        env=worker_env(migrated_dsn, redis_url, kafka_bootstrap),
        log=tmp_path / "worker.log",
    )
    try:
        await eventually(
            lambda: converged(migrated_dsn, oms_server, 2, worker_id), 60, "first fills"
        )

        # Act: the broker goes away; one after the other, AAPL (held by the first
        # execution), NVDA (the second) and MSFT (the first again) fall through their stops.
        # Each must close while the broker is still away: no execution waits for Kafka.
        await kafka_control.astop()
        down_at = time.monotonic()
        closed_in = []
        for symbol, execution_id in (("AAPL", ids[0]), ("NVDA", ids[1]), ("MSFT", ids[0])):
            fall = PRICES[symbol] * Decimal("0.85")
            await write_price(
                redis_client, symbol, fall, datetime.now(UTC), key_prefix=price_prefix
            )
            closed_in.append(
                await eventually(
                    lambda e=execution_id, s=symbol: _stop_loss_filled(migrated_dsn, e, s),
                    10,
                    f"{symbol} stop-loss filled while Kafka is down",
                )
            )
        all_closed_while_down = time.monotonic() - down_at < OUTAGE_S
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        alive_while_down = proc.alive
        await kafka_control.astart()
        down_for = time.monotonic() - down_at
        fills = await _db_fill_ids(migrated_dsn, ids)
        delivered_in = await eventually(
            lambda: _events_cover(kafka_bootstrap, names["execution"], fills),
            60,
            "every fill's event on strategy.execution after the broker is back",
        )
        events = list((await read_events(kafka_bootstrap, names["execution"])).values())
        statuses = await fetch_all(
            migrated_dsn,
            "SELECT status FROM strategy_executions WHERE execution_id = ANY($1::uuid[])",
            ids,
        )
        book = await ledger(migrated_dsn, oms_server)
        alive_after = proc.alive
    finally:
        exit_code = proc.terminate()

    # Assert
    assert all_closed_while_down, closed_in
    assert alive_while_down
    assert alive_after
    assert exit_code == 0
    assert sorted(r["status"] for r in statuses) == ["active", "active"]
    types = [e["type"] for e in events]
    assert types.count("strategy.execution.stop_loss_triggered") == 3
    assert "strategy.execution.error" not in types
    assert types.count("strategy.execution.started") == 2
    counts = assert_never_twice_never_lost(book)
    record_figures(
        "kafka_outage",
        {
            "executions": len(ids),
            "kafka_down_s": round(down_for, 2),
            "stop_losses_filled_while_down_after_s": [round(t, 2) for t in closed_in],
            "events_complete_after_restart_s": round(delivered_in, 2),
            "events": len(events),
            "fills_with_events": len(fills),
            **counts,
        },
    )


def _with_stop_loss(payload: bytes) -> bytes:
    message = json.loads(payload)
    message["config"]["risk_params"]["stop_loss_pct"] = float(STOP_LOSS_PCT)
    return json.dumps(message).encode()


async def _stop_loss_filled(dsn: str, execution_id: uuid.UUID, symbol: str) -> bool:
    rows = await fetch_all(
        dsn,
        "SELECT 1 FROM execution_orders WHERE execution_id = $1 AND symbol = $2"
        " AND purpose = 'STOP_LOSS' AND status = 'FILLED'",
        execution_id,
        symbol,
    )
    return bool(rows)


async def _db_fill_ids(dsn: str, ids: list[uuid.UUID]) -> set[str]:
    rows = await fetch_all(
        dsn,
        "SELECT f.fill_id FROM execution_fills f JOIN execution_orders o"
        " ON o.client_order_id = f.client_order_id WHERE o.execution_id = ANY($1::uuid[])",
        ids,
    )
    return {str(r["fill_id"]) for r in rows}


async def _events_cover(bootstrap: str, topic: str, fill_ids: set[str]) -> bool:
    seen = {
        str(e.get("fill_id"))
        for e in (await read_events(bootstrap, topic)).values()
        if e["type"] == "strategy.execution.order_filled"
    }
    return fill_ids <= seen
