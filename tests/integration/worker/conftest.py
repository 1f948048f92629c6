"""End-to-end fixtures: the production worker (`run_worker`) against the real harness.

Each test gets its own migrated database, its own Kafka topics and consumer group, its own
Redis price keys and an in-process paper OMS (gRPC on a free port) that prices orders from
those same Redis keys, so the worker and the OMS always agree on the market. Every fixture
closes what it opened, whatever the test did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.adapters.redis_prices import RedisPriceSource, write_price
from strategy_worker.config import WorkerConfig
from strategy_worker.config_loader import load_config
from strategy_worker.oms_sim.config import OmsSimConfig
from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.runtime.app import run_worker

from ..conftest import TopicFactory
from .sample import ROOT, START_PRICES

CONFIG_FILE = ROOT / "config" / "config.yaml"
WORKER_BIN = ROOT / ".venv" / "bin" / "strategy-worker"

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- polling


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float, what: str, every: float = 0.05
) -> Any:
    """Poll `probe` until it returns something truthy (returned); fail after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await probe()
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {result!r})")
        await asyncio.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- database


@dataclass(frozen=True)
class Db:
    """A migrated database private to one test, with small query helpers."""

    url: str

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def executions(self) -> list[asyncpg.Record]:
        return await self.fetch("SELECT * FROM strategy_executions ORDER BY started_at")

    async def orders(self, execution_id: uuid.UUID | None = None) -> list[asyncpg.Record]:
        if execution_id is None:
            return await self.fetch("SELECT * FROM execution_orders ORDER BY intent_seq")
        return await self.fetch(
            "SELECT * FROM execution_orders WHERE execution_id = $1 ORDER BY intent_seq",
            execution_id,
        )

    async def risk_events(self, execution_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self.fetch(
            "SELECT * FROM risk_events WHERE execution_id = $1 ORDER BY occurred_at", execution_id
        )

    async def held(self, execution_id: uuid.UUID) -> dict[str, Decimal]:
        """Quantities the execution's persisted `positions` JSON holds, by symbol."""
        (row,) = await self.fetch(
            "SELECT positions FROM strategy_executions WHERE execution_id = $1", execution_id
        )
        raw = row["positions"]
        state = json.loads(raw) if isinstance(raw, str) else dict(raw)
        return {
            sym: Decimal(pos["quantity"]) for sym, pos in (state.get("positions") or {}).items()
        }

    async def all_filled(self, execution_id: uuid.UUID, count: int) -> list[asyncpg.Record]:
        """The execution's orders once there are `count` of them and all are FILLED
        (protective legs resting at the OMS left out: they rest for the position's life)."""
        rows = [r for r in await self.orders(execution_id) if not _resting_leg(r)]
        if len(rows) >= count and all(r["status"] == "FILLED" for r in rows):
            return rows
        return []


def _resting_leg(row: asyncpg.Record) -> bool:
    """A native protective leg (STOP, STOP_LIMIT, TRAILING_STOP or a take-profit LIMIT)."""
    return bool(
        row["reduce_only"]
        and row["purpose"] in ("STOP_LOSS", "TAKE_PROFIT", "TRAILING_STOP")
        and row["order_type"] != "MARKET"
    )


@pytest.fixture
async def db(fresh_database_url: str) -> Db:
    await migrate(fresh_database_url)
    return Db(fresh_database_url)


# --------------------------------------------------------------------------- prices


@dataclass
class PriceFeed:
    """The market-data side: writes prices to Redis in the documented format."""

    client: Redis
    prefix: str

    async def set(self, symbol: str, price: Decimal | str) -> None:
        await write_price(
            self.client, symbol, Decimal(price), datetime.now(UTC), key_prefix=self.prefix
        )

    async def set_many(self, prices: Mapping[str, Decimal]) -> None:
        for symbol, price in prices.items():
            await self.set(symbol, price)


@pytest.fixture
async def prices(redis_client: Redis) -> AsyncIterator[PriceFeed]:
    """Unique Redis price keys seeded with START_PRICES; deleted afterwards."""
    feed = PriceFeed(redis_client, f"sw-e2e:{uuid.uuid4().hex[:10]}:prices:")
    await feed.set_many(START_PRICES)
    try:
        yield feed
    finally:
        keys = [key async for key in redis_client.scan_iter(f"{feed.prefix}*")]
        if keys:
            await redis_client.delete(*keys)


# --------------------------------------------------------------------------- the paper OMS


@pytest.fixture
async def oms(prices: PriceFeed, redis_url: str) -> AsyncIterator[OmsSimServer]:
    """The paper OMS over gRPC on a free port, pricing fills from the worker's Redis keys.

    No slippage and no fees, so the figures a test checks are the prices it wrote.
    """
    source = RedisPriceSource(
        Redis.from_url(redis_url, socket_timeout=5),
        key_prefix=prices.prefix,
        max_age=timedelta(hours=1),
    )
    server = OmsSimServer(
        OmsSimConfig(host="127.0.0.1", port=0, slippage_bps=Decimal(0), tick_interval_s=0.05),
        prices=source,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)
        await source.close()


# --------------------------------------------------------------------------- kafka


@dataclass(frozen=True)
class Topics:
    approved: str
    execution: str
    control: str
    dead_letter: str
    group: str


@pytest.fixture
async def topics(make_topic: TopicFactory) -> Topics:
    """Fresh topics and a fresh consumer group for one test (deleted by make_topic)."""
    return Topics(
        approved=await make_topic("e2e.approved"),
        execution=await make_topic("e2e.execution"),
        control=await make_topic("e2e.control"),
        dead_letter=await make_topic("e2e.dlq"),
        group=f"e2e-worker-{uuid.uuid4().hex[:10]}",
    )


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets on `topic`, by partition."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """An ordinary aiokafka producer, as an upstream service would use."""
    client = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@dataclass
class TopicReader:
    """Collects every record of one topic from the beginning, in the background."""

    consumer: AIOKafkaConsumer
    records: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        async for record in self.consumer:
            self.records.append(record)

    def json(self) -> list[dict[str, Any]]:
        """Values parsed with exact decimals (as docs/messages.md tells consumers to), each
        event once: the outbox relay delivers at least once, and a consumer drops repeats by
        the `event-id` header (records without one, e.g. dead letters, are all kept)."""
        seen: set[bytes] = set()
        out: list[dict[str, Any]] = []
        for record in self.records:
            event_id = dict(record.headers or ()).get("event-id")
            if event_id is not None:
                if event_id in seen:
                    continue
                seen.add(event_id)
            out.append(json.loads(record.value, parse_float=Decimal))
        return out

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, within: float, what: str
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            return next((e for e in self.json() if predicate(e)), None)

        found: dict[str, Any] = await eventually(probe, within=within, what=what)
        return found

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        return [e for e in self.json() if e.get("type") == f"strategy.execution.{suffix}"]


ReadTopic = Callable[[str], Awaitable[TopicReader]]


@pytest.fixture
async def read_topic(kafka_bootstrap: str) -> AsyncIterator[ReadTopic]:
    """Open readers of whole topics (from offset 0, no group); stopped at teardown."""
    readers: list[TopicReader] = []

    async def open_reader(topic: str) -> TopicReader:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        reader = TopicReader(consumer)
        reader.task = asyncio.create_task(reader._pump(), name=f"read-{topic}")
        readers.append(reader)
        return reader

    try:
        yield open_reader
    finally:
        for reader in readers:
            if reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader.task
            await reader.consumer.stop()


# --------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class WorkerEnv:
    """Environment variables that point `strategy-worker run` at this test's harness."""

    values: dict[str, str]
    health_port: int
    metrics_port: int

    def config(self, **overrides: str) -> WorkerConfig:
        """The config the production loader builds from config/config.yaml + this env."""
        return load_config(CONFIG_FILE, {**self.values, **overrides})


@pytest.fixture
def worker_env(
    db: Db,
    topics: Topics,
    oms: OmsSimServer,
    prices: PriceFeed,
    redis_url: str,
    kafka_bootstrap: str,
) -> WorkerEnv:
    """Short intervals and everything on this test's servers (SW__SECTION__KEY overrides)."""
    health_port, metrics_port = free_port(), free_port()
    values = {
        "DATABASE_URL": db.url,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "WORKER_ID": f"e2e-{uuid.uuid4().hex[:8]}",
        "SW__KAFKA__CONSUMER_GROUP": topics.group,
        "SW__KAFKA__TOPICS__APPROVED": topics.approved,
        "SW__KAFKA__TOPICS__EXECUTION": topics.execution,
        "SW__KAFKA__TOPICS__CONTROL": topics.control,
        "SW__KAFKA__TOPICS__DEAD_LETTER": topics.dead_letter,
        "SW__KAFKA__COMMIT_INTERVAL": "0.2",
        "SW__KAFKA__SESSION_TIMEOUT_MS": "6000",
        "SW__OMS_GRPC__HOST": "127.0.0.1",
        "SW__OMS_GRPC__PORT": str(oms.port),
        "SW__OMS_GRPC__TIMEOUT": "1",
        "SW__OMS_GRPC__RETRY__BACKOFF_MS": "50",
        "SW__OMS_GRPC__RETRY__MAX_BACKOFF_MS": "200",
        "SW__OMS_GRPC__BREAKER__RESET_TIMEOUT_S": "0.5",
        "SW__REDIS__KEY_PREFIX": prices.prefix,
        "SW__EXECUTION__POSITION_CHECK_INTERVAL": "0.3",
        "SW__EXECUTION__REBALANCE_INTERVAL": "3600",
        "SW__EXECUTION__RECONCILE_INTERVAL": "3600",
        "SW__EXECUTION__LEASE_SECONDS": "5",
        "SW__EXECUTION__HEARTBEAT": "1",
        "SW__EXECUTION__GRACE_PERIOD": "10",
        "SW__HEALTH__HOST": "127.0.0.1",
        "SW__HEALTH__PORT": str(health_port),
        "SW__HEALTH__CHECK_TIMEOUT": "1",
        "SW__METRICS__HOST": "127.0.0.1",
        "SW__METRICS__PORT": str(metrics_port),
    }
    return WorkerEnv(values=values, health_port=health_port, metrics_port=metrics_port)


@dataclass
class RunningWorker:
    """`run_worker(config, stop=event)` as a task, with its HTTP endpoints."""

    config: WorkerConfig
    stop: asyncio.Event
    task: asyncio.Task[int]
    health_url: str
    metrics_url: str

    async def get(self, url: str) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            return resp.status, await resp.text()

    async def metrics(self) -> str:
        status, body = await self.get(self.metrics_url)
        assert status == 200, f"/metrics answered {status}"
        return body

    async def shutdown(self, within: float = 20.0) -> int:
        """Set the stop event and return the worker's exit code (bounded)."""
        self.stop.set()
        async with asyncio.timeout(within):
            return await asyncio.shield(self.task)


@pytest.fixture
async def start_worker(
    worker_env: WorkerEnv,
) -> AsyncIterator[Callable[..., Awaitable[RunningWorker]]]:
    """Start the production worker in this event loop; always stopped at teardown."""
    running: list[RunningWorker] = []

    async def start(**overrides: str) -> RunningWorker:
        config = worker_env.config(**overrides)
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(config, stop=stop), name="run-worker")
        worker = RunningWorker(
            config=config,
            stop=stop,
            task=task,
            health_url=f"http://127.0.0.1:{config.health.port}/health",
            metrics_url=f"http://127.0.0.1:{config.metrics.port}/metrics",
        )
        running.append(worker)

        async def healthy() -> bool:
            if task.done():
                task.result()  # a startup failure surfaces here with its own error
            with contextlib.suppress(aiohttp.ClientError, OSError):
                status, _ = await worker.get(worker.health_url)
                return status == 200
            return False

        await eventually(healthy, within=30, what="worker /health", every=0.1)
        return worker

    try:
        yield start
    finally:
        for worker in running:
            worker.stop.set()
        for worker in running:
            try:
                async with asyncio.timeout(30):
                    await worker.task
            except BaseException:
                _log.exception("worker did not stop cleanly at teardown")
                worker.task.cancel()
                with contextlib.suppress(BaseException):
                    await worker.task
