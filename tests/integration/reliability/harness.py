"""Shared pieces of the reliability tests: strategy messages, prices in Redis, the paper OMS,
in-process workers on the real adapters, and subprocess workers (`strategy-worker run`) that
a test can kill -9.

Figures each fault test measures are written with `record_figures` to
.services/reliability/<name>.json (independent of pytest's output capture).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from strategy_worker.adapters.oms_grpc.client import OmsGrpcClient
from strategy_worker.adapters.oms_grpc.config import BreakerConfig, OmsClientConfig, RetryConfig
from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore
from strategy_worker.adapters.redis_prices import RedisPriceSource
from strategy_worker.config import WorkerConfig
from strategy_worker.domain.ids import execution_id_for
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.oms_sim.config import OmsSimConfig, PricesConfig
from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.paper.sinks import JsonLinesSink
from strategy_worker.ports import DeadLetterSink
from strategy_worker.runtime.clocks import SystemClock
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.runtime.wiring import App, build_worker
from strategy_worker.runtime.worker import Worker
from strategy_worker.store import OutboxEvent
from strategy_worker.testing.simulation.messages import encode as encode  # the tests import it here

from ..servers import SERVICES_DIR

ROOT = Path(__file__).resolve().parents[3]
FIGURES_DIR = SERVICES_DIR / "reliability"
WORKER_BIN = ROOT / ".venv" / "bin" / "strategy-worker"

PRICES: dict[str, Decimal] = {
    "AAPL": Decimal("175.50"),
    "MSFT": Decimal("410.20"),
    "GOOGL": Decimal("140.10"),
    "AMZN": Decimal("178.30"),
    "NVDA": Decimal("880.00"),
    "JPM": Decimal("195.40"),
}
USER_ID = uuid.UUID("660e8400-e29b-41d4-a716-446655440000")
BASKETS: tuple[tuple[str, ...], ...] = (
    ("AAPL", "MSFT", "GOOGL"),
    ("AMZN", "NVDA", "JPM"),
    ("AAPL", "NVDA"),
    ("MSFT", "JPM", "AMZN", "GOOGL"),
)


def record_figures(name: str, figures: Mapping[str, Any]) -> Path:
    """Write a test's measured figures to .services/reliability/<name>.json."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    return path


def strategy_message(
    index: int,
    *,
    run: str,
    user_id: uuid.UUID = USER_ID,
    capital: str = "100000.00",
) -> dict[str, Any]:
    """A valid `strategy.approved` message; `run` keeps strategy ids unique per test."""
    symbols = BASKETS[index % len(BASKETS)]
    weight = Decimal("0.9") / len(symbols)
    weight = min(weight, Decimal("0.30")).quantize(Decimal("0.01"))
    return {
        "type": "strategy.approved",
        "strategy_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{index}")),
        "user_id": str(user_id),
        "timestamp": "2024-01-01T00:00:00Z",
        "config": {
            "name": f"reliability {index}",
            "type": "MOMENTUM",
            "symbols": list(symbols),
            "allocation": {s: str(weight) for s in symbols},
            "initial_capital": capital,
            "risk_params": {"max_position_size": "0.30", "max_daily_loss": "0.05"},
        },
    }


def execution_of(message: Mapping[str, Any]) -> uuid.UUID:
    """The execution a `strategy.approved` message creates (strategy id, approval instant)."""
    return execution_id_for(
        uuid.UUID(message["strategy_id"]), datetime.fromisoformat(message["timestamp"])
    )


def control_message(
    *, execution_id: uuid.UUID, action: str, user_id: uuid.UUID = USER_ID, reason: str = ""
) -> bytes:
    message: dict[str, Any] = {
        "type": "strategy.control",
        "request_id": str(uuid.uuid4()),
        "execution_id": str(execution_id),
        "user_id": str(user_id),
        "action": action,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if reason:
        message["reason"] = reason
    return json.dumps(message).encode()


async def seed_prices(redis: Redis, prefix: str, prices: Mapping[str, Decimal] = PRICES) -> None:
    now = datetime.now(UTC).isoformat()
    async with redis.pipeline(transaction=False) as pipe:
        for symbol, price in prices.items():
            pipe.hset(f"{prefix}{symbol}", mapping={"price": str(price), "ts": now})
            pipe.expire(f"{prefix}{symbol}", 3600)
        await pipe.execute()


def oms_sim(*, latency_ms: float = 0.0) -> OmsSimServer:
    """The paper OMS on a free port, priced near PRICES with a tiny seeded random walk."""
    return OmsSimServer(
        OmsSimConfig(
            host="127.0.0.1",
            port=0,
            latency_ms=latency_ms,
            tick_interval_s=0.05,
            prices=PricesConfig(start_prices=PRICES, volatility=Decimal("0.0002"), seed=3),
        )
    )


def oms_client_config(port: int, **overrides: Any) -> OmsClientConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "timeout": 1.0,
        "retry": RetryConfig(max_attempts=3, backoff_ms=50, max_backoff_ms=200),
        "breaker": BreakerConfig(failure_threshold=3, reset_timeout_s=1.0),
    }
    values.update(overrides)
    return OmsClientConfig(**values)


# --------------------------------------------------------------------------- in process


class RecordingSink(JsonLinesSink):
    """Events and dead letters in memory, events kept with their ids too.

    Events leave through the outbox relay, after their commit and at least once (a relay
    cancelled between the publisher's ack and its mark publishes them again): tests wait
    for them and count `unique_events()`, deduplicated by event id as consumers do."""

    def __init__(self) -> None:
        super().__init__(None)
        self.published: list[OutboxEvent] = []

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        self.published.extend(events)
        await super().publish(events)

    def unique_events(self) -> list[Mapping[str, Any]]:
        """Each event's payload once (its first delivery), in delivery order."""
        seen: set[uuid.UUID] = set()
        out: list[Mapping[str, Any]] = []
        for event in self.published:
            if event.event_id not in seen:
                seen.add(event.event_id)
                out.append(event.payload)
        return out

    def repeats(self) -> int:
        """Deliveries beyond the first of an event (allowed: at least once)."""
        return len(self.published) - len({e.event_id for e in self.published})


@dataclass
class Rig:
    """One in-process worker on the real adapters (events and dead letters in memory),
    built by the production wiring."""

    app: App
    store: PostgresStore
    oms: OmsGrpcClient
    prices: RedisPriceSource
    sink: RecordingSink
    registry: CollectorRegistry
    stack: contextlib.AsyncExitStack
    started: bool = False
    closed: bool = field(default=False)

    @property
    def worker(self) -> Worker:
        return self.app.worker

    async def crash(self) -> None:
        """Stop like a dead process: every task cancelled, nothing handed over or closed
        out (the forced quit of a second SIGTERM)."""
        if self.closed:
            return
        self.closed = True
        await self.app.abandon()
        await self.stack.aclose()

    async def close(self, policy: str = "handover") -> None:
        if self.closed:
            return
        self.closed = True
        if self.started:
            await self.app.stop(policy)
        await self.stack.aclose()


async def open_rig(
    *,
    dsn: str,
    oms_port: int,
    redis_url: str,
    price_prefix: str,
    owner_id: str,
    oms_config: OmsClientConfig | None = None,
    dead_letters: DeadLetterSink | None = None,
    start: bool = True,
    **settings: Any,
) -> Rig:
    registry = CollectorRegistry()
    values: dict[str, Any] = {
        "owner_id": owner_id,
        "limits": RiskLimits(),
        "position_check_interval": 3600.0,
        "rebalance_interval": 3600.0,
        "lease_seconds": 2.0,
        "heartbeat": 0.3,
        "reconcile_interval": 1.0,
        "grace_period": 5.0,
        "close_timeout": 5.0,
    }
    values.update(settings)
    runtime = RuntimeSettings(**values)
    stack = contextlib.AsyncExitStack()
    try:
        store = await PostgresStore.connect(
            DatabaseConfig(url=dsn, pool_min_size=1, pool_max_size=4, command_timeout=5.0),
            lease_seconds=runtime.lease_seconds,
        )
        stack.push_async_callback(store.close)
        oms = OmsGrpcClient(oms_config or oms_client_config(oms_port), registry=registry)
        stack.push_async_callback(oms.close)
        prices = RedisPriceSource(
            Redis.from_url(redis_url, socket_timeout=5),
            key_prefix=price_prefix,
            metrics=WorkerMetrics(CollectorRegistry()),
        )
        stack.push_async_callback(prices.close)
        sink = RecordingSink()
        app = await stack.enter_async_context(
            build_worker(
                WorkerConfig(),
                store=store,
                oms=oms,
                prices=prices,
                price_feed=None,
                publisher=sink,
                dead_letters=dead_letters or sink,
                clock=SystemClock(),
                settings=runtime,
                registry=registry,
                consume=False,
                serve_http=False,
                migrate=False,
            )
        )
    except BaseException:
        await stack.aclose()
        raise
    rig = Rig(
        app=app,
        store=store,
        oms=oms,
        prices=prices,
        sink=sink,
        registry=registry,
        stack=stack,
    )
    if start:
        await app.start()
        rig.started = True
    return rig


async def eventually(
    condition: Callable[[], Awaitable[bool]], within_s: float, what: str = "condition"
) -> float:
    """Poll `condition` every 50 ms until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within_s, f"{what} not met within {within_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# --------------------------------------------------------------------------- database views


async def fetch_all(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@dataclass(frozen=True)
class Ledger:
    """Orders and fills of a run, as PostgreSQL and as the OMS have them."""

    db_orders: dict[str, tuple[str, str, Decimal, str]]
    """client order id -> (execution id, symbol+side, quantity, purpose)."""
    db_fills: dict[str, tuple[str, Decimal, Decimal]]
    """fill id -> (client order id, quantity, price)."""
    oms_orders: dict[str, tuple[str, str, Decimal, str]]
    oms_fills: dict[str, tuple[str, Decimal, Decimal]]
    oms_log: list[str]


async def ledger(dsn: str, server: OmsSimServer) -> Ledger:
    orders = await fetch_all(
        dsn,
        "SELECT client_order_id, execution_id, symbol, side, quantity, purpose "
        "FROM execution_orders",
    )
    fills = await fetch_all(
        dsn, "SELECT fill_id, client_order_id, quantity, price FROM execution_fills"
    )
    venue = server.venue
    oms_orders: dict[str, tuple[str, str, Decimal, str]] = {}
    oms_fills: dict[str, tuple[str, Decimal, Decimal]] = {}
    for order in venue.orders():
        req = order.request
        oms_orders[req.client_order_id] = (
            str(req.execution_id),
            f"{req.symbol}:{req.side.value}",
            req.quantity,
            req.purpose,
        )
        for fill in order.fills:
            oms_fills[fill.fill_id] = (fill.client_order_id, fill.quantity, fill.price)
    return Ledger(
        db_orders={
            r["client_order_id"]: (
                str(r["execution_id"]),
                f"{r['symbol']}:{r['side']}",
                r["quantity"],
                r["purpose"],
            )
            for r in orders
        },
        db_fills={r["fill_id"]: (r["client_order_id"], r["quantity"], r["price"]) for r in fills},
        oms_orders=oms_orders,
        oms_fills=oms_fills,
        oms_log=venue.order_log,
    )


def assert_never_twice_never_lost(book: Ledger) -> dict[str, int]:
    """The invariants of issue 7 on one ledger; returns the counts checked."""
    # No client order id twice at the OMS.
    assert len(book.oms_log) == len(set(book.oms_log)), "a client order id reached the OMS twice"
    # Intent before action: every order the OMS has was recorded first, with the same content.
    unrecorded = set(book.oms_orders) - set(book.db_orders)
    assert not unrecorded, f"orders at the OMS never recorded: {sorted(unrecorded)[:3]}"
    for cid, (execution, side, qty, _purpose) in book.oms_orders.items():
        assert book.db_orders[cid][:3] == (execution, side, qty), f"{cid} differs from its intent"
    # No double quantity: one INITIAL order per execution and symbol.
    initial: dict[tuple[str, str], int] = {}
    for cid, (execution, side, _qty, _purpose) in book.oms_orders.items():
        if book.db_orders[cid][3] == "INITIAL":
            initial[(execution, side)] = initial.get((execution, side), 0) + 1
    doubled = {k: n for k, n in initial.items() if n > 1}
    assert not doubled, f"initial orders sent twice: {doubled}"
    # Never lost: every fill at the OMS is in PostgreSQL, and nothing else is.
    assert book.db_fills == book.oms_fills, (
        f"fills differ: missing {len(set(book.oms_fills) - set(book.db_fills))}, "
        f"extra {len(set(book.db_fills) - set(book.oms_fills))}"
    )
    return {
        "orders_at_oms": len(book.oms_orders),
        "orders_recorded": len(book.db_orders),
        "fills_at_oms": len(book.oms_fills),
        "fills_recorded": len(book.db_fills),
    }


# --------------------------------------------------------------------------- subprocess


def worker_config_file(
    path: Path,
    *,
    topics: Mapping[str, str],
    group: str,
    oms_port: int,
    price_prefix: str,
    risk: Mapping[str, Any] | None = None,
    **execution: Any,
) -> Path:
    """A YAML config for `strategy-worker run` against the harness (secrets stay in env);
    `risk` overrides the shipped limits."""
    exec_section: dict[str, Any] = {
        "lease_seconds": 2,
        "heartbeat": 0.5,
        "reconcile_interval": 1,
        "position_check_interval": 2,
        "rebalance_interval": 3600,
        "shutdown_policy": "handover",
        "grace_period": 5,
    }
    exec_section.update(execution)
    config = {
        "kafka": {
            "consumer_group": group,
            "topics": dict(topics),
            "session_timeout_ms": 6000,
            "commit_interval": 0.2,
        },
        "oms_grpc": {
            "host": "127.0.0.1",
            "port": oms_port,
            "timeout": 2,
            "retry": {"max_attempts": 3, "backoff_ms": 50, "max_backoff_ms": 400},
            "breaker": {"failure_threshold": 5, "reset_timeout_s": 1},
        },
        "execution": exec_section,
        **({"risk": dict(risk)} if risk else {}),
        "redis": {"key_prefix": price_prefix, "price_max_age": 3600},
        "metrics": {"port": 0},
        "health": {"port": 0},
        "logging": {"level": "INFO", "json": True},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class WorkerProcess:
    """`strategy-worker run` in its own process group; kill() is a real SIGKILL."""

    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn_worker(
    config: Path, *, worker_id: str, env: Mapping[str, str], log: Path
) -> WorkerProcess:
    full_env = {**os.environ, **env, "CONFIG_PATH": str(config), "WORKER_ID": worker_id}
    full_env.pop("SW_SERVICES_DIR", None)
    handle = log.open("ab")
    proc = subprocess.Popen(
        [str(WORKER_BIN), "run"],
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=str(log.parent),
        start_new_session=True,
    )
    handle.close()
    return WorkerProcess(proc=proc, log=log)


def fills_by_execution(book: Ledger) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cid, *_ in book.db_fills.values():
        execution = book.db_orders[cid][0]
        counts[execution] = counts.get(execution, 0) + 1
    return counts


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def read_events(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """Every event on the topic so far (no group, from the beginning), by event id, each
    once (its first delivery, in delivery order): the outbox relay delivers at least once,
    and consumers drop repeats by the `event-id` header."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        events: dict[str, dict[str, Any]] = {}
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                return events
            for records in batch.values():
                for record in records:
                    event_id = dict(record.headers or ()).get("event-id")
                    assert event_id, "an event without its event-id header"
                    if record.value is not None:
                        events.setdefault(event_id.decode(), json.loads(record.value))
    finally:
        await consumer.stop()
