"""The total exposure limit holds across the fleet (issue 13): three worker processes in one
consumer group, six partitions, 300 strategies published at once asking five times the cap,
prices held constant, PostgreSQL sampled every 50 ms, one worker killed -9 mid-run and taken
over. Recorded exposure never passes the cap (fleet and per user), and afterwards the
ledger equals its recomputation from orders and positions exactly."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.oms_sim.config import OmsSimConfig, PricesConfig
from strategy_worker.oms_sim.server import OmsSimServer

from .harness import (
    PRICES,
    encode,
    eventually,
    fetch_all,
    record_figures,
    spawn_worker,
    strategy_message,
    unique,
    worker_config_file,
)
from .test_crash_recovery import TopicFactory, produce, topics, worker_env

pytestmark = pytest.mark.timeout(300)

CAP = Decimal("1000000")
USER_CAP = Decimal("400000")
USERS = [uuid.UUID(int=0xF1EE7 + i) for i in range(3)]
STRATEGIES = 300
CAPITAL = "18519"  # 0.9 invested: 16,667 each, 300 of them ask five times the cap


async def _sample(dsn: str) -> tuple[Decimal, dict[str, Decimal], Decimal]:
    """The fleet's ledger total, each user's, and the fleet's recomputation."""
    rows = await fetch_all(dsn, "SELECT scope, scope_key, exposure FROM risk_ledger")
    fleet = next((r["exposure"] for r in rows if r["scope"] == "fleet"), Decimal(0))
    users = {r["scope_key"]: r["exposure"] for r in rows if r["scope"] == "user"}
    recomputed = await fetch_all(dsn, Q.LEDGER_RECOMPUTED)
    return fleet, users, sum((r["recomputed"] for r in recomputed), Decimal(0))


async def test_three_workers_and_a_kill_never_take_the_fleet_past_its_exposure_cap(
    migrated_dsn: str,
    redis_url: str,
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    price_prefix: str,
    tmp_path: Path,
) -> None:
    # Arrange: constant prices at the OMS and in Redis; three workers, six partitions.
    server = OmsSimServer(
        OmsSimConfig(
            host="127.0.0.1",
            port=0,
            tick_interval_s=0.05,
            prices=PricesConfig(start_prices=PRICES, volatility=Decimal(0)),
        )
    )
    await server.start()
    run = unique("fleet")
    names = await topics(make_topic)
    names["approved"] = await make_topic("approved", partitions=6)
    config = worker_config_file(
        tmp_path / "worker.yaml",
        topics=names,
        group=f"{run}-group",
        oms_port=server.port,
        price_prefix=price_prefix,
    )
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["risk"] = {"max_total_exposure": str(CAP), "max_user_exposure": str(USER_CAP)}
    config.write_text(yaml.safe_dump(data))
    env = worker_env(migrated_dsn, redis_url, kafka_bootstrap)
    workers = {
        name: spawn_worker(config, worker_id=f"{run}-{name}", env=env, log=tmp_path / f"{name}.log")
        for name in ("w1", "w2", "w3")
    }
    samples: list[tuple[Decimal, dict[str, Decimal], Decimal]] = []
    sampling = True

    async def sampler() -> None:
        while sampling:
            samples.append(await _sample(migrated_dsn))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(sampler())
    try:
        await asyncio.sleep(3)  # the group forms
        messages = [
            strategy_message(i, run=run, user_id=USERS[i % 3], capital=CAPITAL)
            for i in range(STRATEGIES)
        ]
        # Act: everything at once; kill one worker once executions are being created.
        await produce(kafka_bootstrap, names["approved"], [encode(m) for m in messages])

        async def some_started() -> bool:
            rows = await fetch_all(migrated_dsn, "SELECT count(*) AS n FROM strategy_executions")
            return bool(rows[0]["n"] >= 10)

        await eventually(some_started, 60, "first executions")
        workers["w2"].kill()

        async def all_handled() -> bool:
            rows = await fetch_all(
                migrated_dsn,
                "SELECT (SELECT count(*) FROM strategy_executions) AS started, "
                "(SELECT count(*) FROM event_outbox "
                " WHERE event_type = 'strategy.execution.refused') AS refused, "
                "(SELECT count(*) FROM execution_orders "
                " WHERE status IN ('PENDING', 'ACCEPTED', 'PARTIALLY_FILLED')) AS open",
            )
            r = rows[0]
            return bool(r["started"] + r["refused"] == STRATEGIES and r["open"] == 0)

        await eventually(all_handled, 120, "every strategy started or refused, every order done")
        await asyncio.sleep(1)
    finally:
        sampling = False
        await task
        for proc in workers.values():
            proc.kill()
        await server.stop()
        await server.prices.close()

    # Assert: never past the caps, at any sample; afterwards the ledger is exact.
    assert len(samples) > 20
    assert max(fleet for fleet, _, _ in samples) <= CAP
    assert max(recomputed for _, _, recomputed in samples) <= CAP
    assert max((max(users.values(), default=Decimal(0)) for _, users, _ in samples)) <= USER_CAP
    fleet, users, recomputed = await _sample(migrated_dsn)
    held = await fetch_all(
        migrated_dsn, "SELECT sum(ledger_exposure) AS s FROM strategy_executions"
    )
    assert fleet == recomputed == held[0]["s"]
    store = await PostgresStore.connect(DatabaseConfig(url=migrated_dsn, pool_min_size=1))
    try:
        audit = await store.audit_ledger()
    finally:
        await store.close()
    assert audit.difference == 0
    assert audit.repaired == {}
    rows = await fetch_all(
        migrated_dsn,
        "SELECT (SELECT count(*) FROM strategy_executions) AS started, "
        "(SELECT count(*) FROM event_outbox WHERE event_type = 'strategy.execution.refused')"
        " AS refused",
    )
    empty = await fetch_all(
        migrated_dsn,
        "SELECT count(*) AS n FROM strategy_executions e WHERE NOT EXISTS "
        "(SELECT 1 FROM execution_orders o WHERE o.execution_id = e.execution_id)",
    )
    assert empty[0]["n"] == 0  # never an execution started with nothing and no word why
    record_figures(
        "fleet_exposure",
        {
            "workers": 3,
            "partitions": 6,
            "strategies": STRATEGIES,
            "asked": str(Decimal(CAPITAL) * Decimal("0.9") * STRATEGIES),
            "cap": str(CAP),
            "started": rows[0]["started"],
            "refused": rows[0]["refused"],
            "samples": len(samples),
            "max_fleet": str(max(f for f, _, _ in samples)),
            "final_fleet": str(fleet),
            "final_users": {k: str(v) for k, v in users.items()},
        },
    )
