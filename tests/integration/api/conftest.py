"""The API against the real PostgreSQL and Kafka: a migrated database seeded with two users'
executions (orders, fills, snapshots, risk events), the outbox table of migration 002 (created
here until it lands), a control topic, and `api_service` serving on a free loopback port."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.api.followers import EventFollower, OutboxFollower
from strategy_worker.api.reads import init_connection
from strategy_worker.api.server import RunningApi, api_service
from strategy_worker.auth.tokens import dev_signing_key, issue_token
from strategy_worker.config import WorkerConfig
from strategy_worker.config_loader import load_config

from ..conftest import TopicFactory

OWNER = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")
OPERATOR = uuid.UUID("33333333-3333-4333-8333-333333333333")
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

# The lead's migration 002 will create this table; the API follows it by published_seq.
OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS event_outbox (
    seq bigserial PRIMARY KEY, event_id uuid UNIQUE, execution_id uuid, user_id uuid,
    key text, event_type text, payload jsonb, created_at timestamptz NOT NULL DEFAULT now(),
    published_seq bigint UNIQUE, published_at timestamptz)
"""


@dataclass
class Seeded:
    own: uuid.UUID  # OWNER's running execution
    own_stopped: uuid.UUID
    others: uuid.UUID  # OTHER's running execution


async def seed_execution(
    conn: asyncpg.Connection, user: uuid.UUID, *, status: str = "active", name: str = "tech"
) -> uuid.UUID:
    execution_id, strategy_id = uuid.uuid4(), uuid.uuid4()
    positions = {
        "initial_capital": "100000.00",
        "cash": "82450.00",
        "positions": {
            "AAPL": {
                "quantity": "100",
                "cost_basis": "17550.00",
                "avg_cost": "175.5000",
                "realized_pnl": "0",
                "fees": "0",
                "last_price": "175.50",
                "trip_net_pnl": "0",
            }
        },
        "risk": {"halted": False, "reducing": False, "stopped_out": {}},
    }
    config = {
        "name": name,
        "type": "MOMENTUM",
        "symbols": ["AAPL", "MSFT"],
        "allocation": {"AAPL": "0.3", "MSFT": "0.2"},
        "initial_capital": "100000.00",
        "risk_params": {"stop_loss_pct": "0.05"},
    }
    await conn.execute(
        """INSERT INTO strategy_executions (execution_id, strategy_id, user_id, approved_at,
           status, config, positions, initial_capital, cash, realized_pnl, total_pnl,
           started_at)
           VALUES ($1,$2,$3,$4,$5,$6,$7,100000.00,82450.00,-1.10,-1.10,$4::timestamptz)""",
        execution_id,
        strategy_id,
        user,
        T0,
        status,
        config,
        positions,
    )
    buy = f"sw-{execution_id.hex}-000001"
    sell = f"sw-{execution_id.hex}-000002"
    for seq, coid, side, purpose, qty, price in (
        (1, buy, "BUY", "INITIAL", 110, Decimal("175.50")),
        (2, sell, "SELL", "REBALANCE", 10, Decimal("175.40")),
    ):
        await conn.execute(
            """INSERT INTO execution_orders (order_id, execution_id, client_order_id,
               intent_seq, symbol, side, order_type, purpose, quantity, price, status,
               filled_quantity, filled_price, created_at)
               VALUES ($1,$2,$3,$4,'AAPL',$5,'MARKET',$6,$7::numeric,$8::numeric,'FILLED',
                       $7::numeric,$8::numeric,$9)""",
            uuid.uuid4(),
            execution_id,
            coid,
            seq,
            side,
            purpose,
            qty,
            price,
            T0 + timedelta(minutes=seq),
        )
        await conn.execute(
            """INSERT INTO execution_fills (fill_id, client_order_id, symbol, side, quantity,
               price, fee, filled_at) VALUES ($1,$2,'AAPL',$3,$4,$5,0,$6)""",
            f"f-{coid}",
            coid,
            side,
            qty,
            price,
            T0 + timedelta(minutes=seq, seconds=1),
        )
    for minute, value in ((5, "99990.00"), (10, "100210.50"), (15, "99998.90")):
        await conn.execute(
            """INSERT INTO position_snapshots (snapshot_id, execution_id, taken_at, positions,
               total_value, total_pnl, unrealized_pnl, realized_pnl, cash)
               VALUES ($1,$2,$3,'{}',$4::numeric,$4::numeric-100000,0,-1.10,82450.00)""",
            uuid.uuid4(),
            execution_id,
            T0 + timedelta(minutes=minute),
            Decimal(value),
        )
    await conn.execute(
        """INSERT INTO risk_events (event_id, execution_id, event_type, severity, description,
           occurred_at) VALUES ($1,$2,'ALLOCATION_CAPPED','WARNING','capped at 30%',$3)""",
        uuid.uuid4(),
        execution_id,
        T0,
    )
    return execution_id


@pytest.fixture
async def api_db(fresh_database_url: str) -> str:
    await migrate(fresh_database_url)
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute(OUTBOX_DDL)
    finally:
        await conn.close()
    return fresh_database_url


@pytest.fixture
async def seeded(api_db: str) -> Seeded:
    conn = await asyncpg.connect(api_db)
    await init_connection(conn)
    try:
        return Seeded(
            own=await seed_execution(conn, OWNER),
            own_stopped=await seed_execution(conn, OWNER, status="stopped", name="old"),
            others=await seed_execution(conn, OTHER, name="theirs"),
        )
    finally:
        await conn.close()


@pytest.fixture
def dev_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SW_DEV_KEY_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


@pytest.fixture
async def control_topic(make_topic: TopicFactory) -> str:
    return await make_topic("api.control")


@pytest.fixture
def api_config(
    dev_keys: Path, api_db: str, kafka_bootstrap: str, control_topic: str
) -> WorkerConfig:
    return load_config(
        env={
            "DATABASE_URL": api_db,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SW__KAFKA__TOPICS__CONTROL": control_topic,
            "SW__API__STREAM__HEARTBEAT": "0.5",
            "SW__API__STREAM__SOURCE": "outbox",
        }
    )


Tokens = Callable[..., str]


@pytest.fixture
def tokens(api_config: WorkerConfig) -> Tokens:
    def make(user: uuid.UUID, *, operator: bool = False, ttl: float = 600) -> str:
        return issue_token(
            user_id=user,
            operator=operator,
            key=dev_signing_key(api_config),
            algorithm="EdDSA",
            now=datetime.now(UTC),
            ttl_s=ttl,
        )

    return make


@pytest.fixture
async def outbox_follower(api_db: str) -> AsyncIterator[EventFollower]:
    pool = await asyncpg.create_pool(api_db, min_size=1, max_size=2)
    try:
        yield OutboxFollower(pool, poll_interval=0.02)
    finally:
        await pool.close()


@pytest.fixture
async def api(
    api_config: WorkerConfig, seeded: Seeded, outbox_follower: EventFollower
) -> AsyncIterator[RunningApi]:
    async with api_service(api_config, follower=outbox_follower, port=0) as running:
        yield running


@dataclass
class Http:
    base: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, headers=headers, json=body
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text, parse_float=Decimal)
            except json.JSONDecodeError:
                return resp.status, text


@pytest.fixture
async def http(api: RunningApi) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield Http(api.url, session)
