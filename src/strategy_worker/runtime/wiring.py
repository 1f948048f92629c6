"""The one wiring of the worker: `build_worker(config, **overrides)`.

Production (`strategy-worker run`), paper mode, the benchmarks and the tests all build the
worker here; an override replaces one part (paper mode's embedded store and file sinks, a
test's in-memory store and venue). Everything is opened on one `AsyncExitStack`: a start
that fails half way closes what it had opened, in reverse order, and so does the end of
the `async with`. `App.run(stop)` runs until `stop` is set or a loop fails; shutdown stops
consuming, lets the worker close or hand over its executions within the grace period
(cancelling what outlived it), commits offsets, and the stack closes the adapters.

Start order: store (migrated) -> OMS client -> prices and feed -> Kafka producer -> worker
(resumes owned executions) -> Kafka consumer -> HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from strategy_worker.auth import ControlVerifier, control_verifier_from
from strategy_worker.config import WorkerConfig
from strategy_worker.domain.clock import Clock
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import (
    BarFeed,
    BarStore,
    DeadLetterSink,
    EventPublisher,
    OmsGateway,
    OrderRateLimit,
    PriceFeed,
    PriceSource,
)
from strategy_worker.runtime.clocks import SystemClock
from strategy_worker.runtime.intake import IncomingStrategy
from strategy_worker.runtime.settings import RuntimeSettings, settings_from
from strategy_worker.runtime.supervisor import Sleep
from strategy_worker.runtime.worker import Worker
from strategy_worker.store import Store

_log = get_logger(__name__)

_UNSET: Any = object()


@dataclass
class App:
    """A built worker with its edges; `run` drives it."""

    worker: Worker
    metrics: WorkerMetrics
    settings: RuntimeSettings
    _consumer: Any = None
    _http: Any = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def start(self) -> None:
        if self._http is not None:
            await self._http.start()
        await self.worker.start()
        if self._consumer is not None:
            await self._consumer.start()
        _log.info("worker running", owner_id=self.settings.owner_id)

    async def run(self, stop: asyncio.Event) -> int:
        """Until `stop` is set (or a loop failed: exit code 1); then a graceful stop."""
        code = 0
        try:
            await self.start()
            stop_wait = asyncio.create_task(stop.wait(), name="stop-signal")
            failed = asyncio.create_task(self.worker.wait(), name="worker-wait")
            done, _ = await asyncio.wait({stop_wait, failed}, return_when=asyncio.FIRST_COMPLETED)
            if failed in done and not failed.cancelled() and failed.exception() is not None:
                code = 1
            stop_wait.cancel()
            failed.cancel()
        finally:
            await self.stop()
        return code

    async def abandon(self) -> None:
        """Quit now without handing anything over (see `Worker.abandon`)."""
        _log.warning("worker quitting at once; executions are left to the next owner")
        await self.worker.abandon()

    async def stop(self, policy: str | None = None) -> None:
        """Graceful stop (idempotent): stop consuming, close or hand over, commit offsets."""
        _log.info("worker stopping", policy=policy or self.settings.shutdown_policy)
        if self._http is not None:
            self._http.set_draining()
        if self._consumer is not None:
            await self._consumer.stop_consuming()
        await self.worker.shutdown(policy)
        if self._consumer is not None:
            await self._consumer.stop()


@contextlib.asynccontextmanager
async def build_worker(
    config: WorkerConfig,
    *,
    store: Store | None = None,
    oms: OmsGateway | None = None,
    prices: PriceSource | None = None,
    price_feed: PriceFeed | None = _UNSET,
    publisher: EventPublisher | None = None,
    dead_letters: DeadLetterSink | None = None,
    clock: Clock | None = None,
    token_clock: Clock | None = None,
    sleep: Sleep | None = None,
    settings: RuntimeSettings | None = None,
    registry: CollectorRegistry | None = None,
    control_verifier: ControlVerifier | None = None,
    order_rate: OrderRateLimit | None = None,
    consume: bool = True,
    serve_http: bool = True,
    migrate: bool = True,
    market: BarStore | None = _UNSET,
    bar_feed: BarFeed | None = _UNSET,
    bar_source: str = "kafka",
) -> AsyncIterator[App]:
    """Build the worker (see the module docstring). Each part given replaces the one the
    config describes: `price_feed=None` disables the price watch (left out: Redis pub/sub
    when `redis.price_channel` is set); `sleep` sleeps in the clock's seconds (an
    accelerated paper clock's); `consume=False` reads no Kafka (paper mode feeds files);
    `control_verifier` replaces the one the config describes (`control_auth`);
    `token_clock` is what control tokens' validity is checked against (left out: `clock`;
    paper mode's clock is simulated, its tokens expire in real time).

    Signals (runtime/signals.py): `market` is where bars are stored (left out: the
    PostgreSQL store's pool; None: rules are not evaluated); `bar_feed` the closed bars
    (left out: the bar topic when `kafka.topics.bars` is set and Kafka is consumed; None:
    bars are built from the prices the worker reads), `bar_source` what they are stored as."""
    async with contextlib.AsyncExitStack() as stack:
        registry = registry or CollectorRegistry()
        metrics = WorkerMetrics(registry)
        settings = settings or settings_from(config)
        store = store or await _open_store(
            config, stack, migrate_first=migrate, lease_seconds=settings.lease_seconds
        )
        oms = oms or _open_oms(config, registry, stack)
        prices = prices or _open_prices(config, metrics, stack)
        feed = price_feed
        if feed is _UNSET:
            feed = _open_feed(config, prices, metrics, stack)
        producer = None
        if publisher is None or dead_letters is None or consume:
            producer = await _open_producer(config, stack)
        topics = config.kafka.topics
        publisher = publisher or _kafka_publisher(producer, topics.execution)
        dead_letters = dead_letters or _dead_letters(producer, topics.dead_letter, settings)
        clock = clock or SystemClock()
        sleep = sleep or _clock_sleep(clock)
        if market is _UNSET:
            market = _market_of(store)
        if bar_feed is _UNSET:
            bar_feed = None
            if consume and topics.bars is not None and market is not None:
                bar_feed = await _open_bar_feed(config, market, metrics, clock, settings)
        worker = Worker(
            settings=settings,
            store=store,
            oms=oms,
            prices=prices,
            publisher=publisher,
            dead_letters=dead_letters,
            metrics=metrics,
            clock=clock,
            sleep=sleep,
            price_feed=feed,
            housekeeping=_housekeeping(config, store, clock, settings, market),
            control_verifier=control_verifier or control_verifier_from(config),
            token_clock=token_clock or clock,
            market=market,
            bar_feed=bar_feed,
            bar_source=bar_source,
        )
        if order_rate is not None or config.risk.fleet_orders_per_second is not None:
            worker.engine.order_rate = order_rate or _fleet_rate(config, stack)
        consumer = _consumer(config, worker, producer, metrics, settings) if consume else None
        http = None
        if serve_http:
            http = _http(config, registry, store, oms, prices, feed, consumer, worker)
            stack.push_async_callback(http.stop)
        app = App(worker=worker, metrics=metrics, settings=settings, _consumer=consumer, _http=http)
        try:
            yield app
        finally:
            await app.worker.shutdown("handover")
            if consumer is not None:
                await consumer.stop()


def install_signal_handlers(
    stop: asyncio.Event, *, force: Callable[[], object] | None = None
) -> Callable[[], None]:
    """SIGTERM and SIGINT request a graceful stop; a second one calls `force` (quit at once,
    see `App.abandon`) when given, else is ignored. Returns the function that restores
    the previous handlers."""
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal() -> None:
        if stop.is_set() and force is not None:
            force()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)

    def restore() -> None:
        for sig in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    return restore


# ---------------------------------------------------------------------- the parts


def _clock_sleep(clock: Clock) -> Sleep:
    """Sleep in the clock's own seconds (an accelerated paper clock has `sleep`)."""
    sleep = getattr(clock, "sleep", None)
    return sleep if callable(sleep) else asyncio.sleep


async def _open_store(
    config: WorkerConfig,
    stack: contextlib.AsyncExitStack,
    *,
    migrate_first: bool,
    lease_seconds: float,
) -> Store:
    from strategy_worker.adapters.postgres import PostgresStore, migrate

    db = config.database
    if migrate_first:
        await migrate(db.dsn(), hint=db.setting_hint())
    store = await PostgresStore.connect(db, lease_seconds=lease_seconds)
    stack.push_async_callback(store.close)
    return store


def _open_oms(
    config: WorkerConfig, registry: CollectorRegistry, stack: contextlib.AsyncExitStack
) -> OmsGateway:
    from strategy_worker.adapters.oms_grpc.client import OmsGrpcClient

    oms = OmsGrpcClient(config.oms_grpc, registry=registry)
    stack.push_async_callback(oms.close)
    return oms


def _open_prices(
    config: WorkerConfig, metrics: WorkerMetrics, stack: contextlib.AsyncExitStack
) -> PriceSource:
    from strategy_worker.adapters.redis_prices import RedisPriceSource

    prices = RedisPriceSource.from_config(config.redis, metrics=metrics)
    stack.push_async_callback(prices.close)
    return prices


def _open_feed(
    config: WorkerConfig,
    prices: PriceSource,
    metrics: WorkerMetrics,
    stack: contextlib.AsyncExitStack,
) -> PriceFeed | None:
    from strategy_worker.adapters.redis_price_feed import RedisPriceFeed
    from strategy_worker.adapters.redis_prices import RedisPriceSource

    if config.redis.price_channel is None or not isinstance(prices, RedisPriceSource):
        return None
    feed = RedisPriceFeed.from_config(config.redis, prices, metrics=metrics)
    stack.push_async_callback(feed.close)
    return feed


async def _open_producer(config: WorkerConfig, stack: contextlib.AsyncExitStack) -> Any:
    from strategy_worker.adapters.kafka.producer import KafkaProducer

    producer = KafkaProducer(config.kafka)
    await producer.start()
    stack.push_async_callback(producer.stop)
    return producer


def _kafka_publisher(producer: Any, topic: str) -> EventPublisher:
    from strategy_worker.adapters.kafka.producer import KafkaEventPublisher

    return KafkaEventPublisher(producer, topic=topic)


def _dead_letters(producer: Any, topic: str, settings: RuntimeSettings) -> DeadLetterSink:
    from strategy_worker.adapters.kafka.producer import KafkaDeadLetterPublisher

    return KafkaDeadLetterPublisher(producer, topic=topic, worker_id=settings.owner_id)


def _market_of(store: Store) -> BarStore | None:
    """Bars and decisions on the PostgreSQL store's own pool (None for other stores)."""
    from strategy_worker.adapters.postgres import PostgresStore
    from strategy_worker.adapters.postgres.market_data import MarketDataStore

    return MarketDataStore(store.pool) if isinstance(store, PostgresStore) else None


async def _open_bar_feed(
    config: WorkerConfig,
    market: BarStore,
    metrics: WorkerMetrics,
    clock: Clock,
    settings: RuntimeSettings,
) -> BarFeed:
    """The bar topic, read from shortly before the newest bar any worker received from it
    (if within the last 8 days; else from its end): bars published while no worker read
    them are not lost; the repeats are duplicates the engines skip."""
    from strategy_worker.adapters.kafka.bars import KafkaBarFeed

    start_from = None
    last = getattr(market, "last_received", None)
    if last is not None:
        now = clock.now()
        newest = await last("kafka", since=now - timedelta(days=8))
        if newest is not None:
            start_from = newest - timedelta(seconds=settings.bar_clock_skew + 60.0)
    return KafkaBarFeed(config.kafka, start_from=start_from, metrics=metrics)


def _fleet_rate(config: WorkerConfig, stack: contextlib.AsyncExitStack) -> OrderRateLimit:
    from strategy_worker.adapters.redis_prices import redis_client
    from strategy_worker.adapters.redis_rate_limit import RedisOrderRate

    risk = config.risk
    assert risk.fleet_orders_per_second is not None
    limit = RedisOrderRate(
        redis_client(config.redis),
        key="strategy-worker:fleet-order-rate",
        rate=float(risk.fleet_orders_per_second),
        burst=risk.fleet_order_burst,
    )
    stack.push_async_callback(limit.close)
    return limit


def _housekeeping(
    config: WorkerConfig,
    store: Store,
    clock: Clock,
    settings: RuntimeSettings,
    market: BarStore | None = None,
) -> list[tuple[str, float, Callable[[], Awaitable[object]]]]:
    """Periodic jobs of the stores themselves: snapshot retention where the store has it,
    and the retention of signal decisions and bars (docs/signals.md) every
    `retention.interval`."""
    jobs: list[tuple[str, float, Callable[[], Awaitable[object]]]] = []
    section = config.retention
    if market is not None:
        signals = config.signals

        async def prune_signals() -> None:
            now = clock.now()
            bar_days = signals.bar_retention_days
            pruned = await market.prune(
                decisions_before=now - timedelta(days=signals.decision_retention_days),
                bars_before=None if bar_days is None else now - timedelta(days=bar_days),
            )
            _log.debug("signal retention ran", pruned=str(pruned))

        jobs.append(("signal-retention", section.interval, prune_signals))
    thin = getattr(store, "thin_snapshots", None)
    if thin is None or not section.enabled:
        return jobs

    async def retention() -> None:
        deleted = await thin(
            now=clock.now(),
            fine_window=timedelta(seconds=section.snapshots_fine),
            hourly_window=timedelta(seconds=section.snapshots_hourly),
            batch=section.batch,
            trading_day_start=settings.limits.trading_day_start,
            owner=settings.owner_id,
        )
        if deleted:
            _log.info("position snapshots thinned", deleted=deleted)

    return [*jobs, ("snapshot-retention", section.interval, retention)]


def _consumer(
    config: WorkerConfig,
    worker: Worker,
    producer: Any,
    metrics: WorkerMetrics,
    settings: RuntimeSettings,
) -> Any:
    from strategy_worker.adapters.kafka.consumer import ConsumedRecord, KafkaRecordConsumer
    from strategy_worker.adapters.kafka.producer import KafkaDeadLetterPublisher

    topics = config.kafka.topics

    def incoming(record: ConsumedRecord) -> IncomingStrategy:
        return IncomingStrategy(record.value, str(record.source), record.timestamp_ms / 1000)

    async def dispatch(record: ConsumedRecord) -> None:
        if record.topic == topics.control:
            await worker.handle_control(record.value, str(record.source))
        else:
            await worker.handle_strategies([incoming(record)])

    async def dispatch_batch(records: list[ConsumedRecord]) -> None:
        # A lane is one partition of one topic: control requests stay one at a time.
        if records[0].topic == topics.control:
            for record in records:
                await dispatch(record)
        else:
            await worker.handle_strategies([incoming(r) for r in records])

    # Each dead letter is counted once: the worker counts the ones it rejects itself, this
    # sink's metrics count those the consumer writes unread (oversized, tombstone, failure).
    dead_letters = KafkaDeadLetterPublisher(
        producer, topic=topics.dead_letter, metrics=metrics, worker_id=settings.owner_id
    )
    return KafkaRecordConsumer(
        config.kafka,
        topics=[topics.approved, topics.control],
        handler=dispatch,
        batch_handler=dispatch_batch,
        dead_letters=dead_letters,
        metrics=metrics,
    )


def _http(
    config: WorkerConfig,
    registry: CollectorRegistry,
    store: Store,
    oms: OmsGateway,
    prices: PriceSource,
    feed: PriceFeed | None,
    consumer: Any,
    worker: Worker,
) -> Any:
    from strategy_worker.adapters.http import HttpServer

    checks: dict[str, Any] = {"postgres": store.ping, "oms": oms.ping}
    if consumer is not None:
        checks["kafka"] = consumer.ping
    ping = getattr(prices, "ping", None)
    if ping is not None:
        checks["redis"] = ping
    feed_ping = getattr(feed, "ping", None)
    if feed_ping is not None:
        checks["price-feed"] = feed_ping
    checks["executions"] = worker.ready
    return HttpServer.from_config(config, registry, checks=checks)
