"""Production wiring (`strategy-worker run`): Kafka in and out, the OMS over gRPC,
PostgreSQL, Redis prices, metrics and health; shutdown on SIGTERM/SIGINT by policy.

Start order: store (migrated) → OMS client → price source and feed → Kafka producer → worker
(resumes owned executions) → Kafka consumer → HTTP. Stop order is the reverse: stop consuming,
let the worker close or hand over its executions, commit offsets, then close the adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from prometheus_client import CollectorRegistry

from strategy_worker.adapters.http import HttpServer
from strategy_worker.adapters.kafka.consumer import ConsumedRecord, KafkaRecordConsumer
from strategy_worker.adapters.kafka.event_buffer import BufferedEventPublisher
from strategy_worker.adapters.kafka.producer import KafkaDeadLetterPublisher, KafkaProducer
from strategy_worker.adapters.oms_grpc.client import OmsGrpcClient
from strategy_worker.adapters.oms_grpc.config import OmsClientConfig
from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore, migrate
from strategy_worker.adapters.redis_price_feed import RedisPriceFeed
from strategy_worker.adapters.redis_prices import RedisPriceSource
from strategy_worker.config import WorkerConfig
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.runtime.clocks import SystemClock
from strategy_worker.runtime.intake import IncomingStrategy
from strategy_worker.runtime.settings import settings_from
from strategy_worker.runtime.worker import Worker

_log = get_logger(__name__)


def database_config(config: WorkerConfig) -> DatabaseConfig:
    """The store's connection settings (the worker's `database` section)."""
    return config.database


def oms_client_config(config: WorkerConfig) -> OmsClientConfig:
    """The OMS client's settings (the worker's `oms_grpc` section)."""
    return config.oms_grpc


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT request a graceful stop (a second one is ignored, not fatal)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def run_worker(config: WorkerConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (or a signal arrives); returns the process exit code."""
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    settings = settings_from(config)
    db = database_config(config)
    await migrate(db.dsn(), hint=db.setting_hint())
    store = await PostgresStore.connect(db)
    oms = OmsGrpcClient(oms_client_config(config), registry=registry)
    prices = RedisPriceSource.from_config(config.redis, metrics=metrics)
    # Stop-losses react to each announced price; the monitor cycle stays the safety net.
    feed = (
        RedisPriceFeed.from_config(config.redis, prices, metrics=metrics)
        if config.redis.price_channel is not None
        else None
    )
    producer = KafkaProducer(config.kafka)
    await producer.start()
    topics = config.kafka.topics
    # Executions never wait for Kafka: events are queued in order and published behind,
    # retried while the broker is away (see adapters/kafka/event_buffer.py).
    events = BufferedEventPublisher(producer, topic=topics.execution, metrics=metrics)
    events.start()
    # Each dead letter is counted once: the worker counts the ones it rejects itself, this
    # sink's metrics count those the consumer writes unread (oversized, tombstone, failure).
    dead_letters = KafkaDeadLetterPublisher(
        producer, topic=topics.dead_letter, metrics=metrics, worker_id=settings.owner_id
    )
    worker_dead_letters = KafkaDeadLetterPublisher(
        producer, topic=topics.dead_letter, worker_id=settings.owner_id
    )
    worker = Worker(
        settings=settings,
        store=store,
        oms=oms,
        prices=prices,
        events=events,
        dead_letters=worker_dead_letters,
        metrics=metrics,
        clock=SystemClock(),
        price_feed=feed,
    )

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

    consumer = KafkaRecordConsumer(
        config.kafka,
        topics=[topics.approved, topics.control],
        handler=dispatch,
        batch_handler=dispatch_batch,
        dead_letters=dead_letters,
        metrics=metrics,
    )
    http = HttpServer.from_config(
        config,
        registry,
        checks={"kafka": consumer.ping, "postgres": store.ping, "oms": oms.ping},
    )
    code = 0
    try:
        await http.start()
        await worker.start()
        await consumer.start()
        _log.info("worker running", owner_id=settings.owner_id)
        stop_wait = asyncio.create_task(stop.wait(), name="stop-signal")
        failed = asyncio.create_task(worker.wait(), name="worker-wait")
        done, _ = await asyncio.wait({stop_wait, failed}, return_when=asyncio.FIRST_COMPLETED)
        if failed in done and failed.exception() is not None:
            code = 1
        stop_wait.cancel()
        failed.cancel()
    finally:
        _log.info("worker stopping", policy=settings.shutdown_policy)
        http.set_draining()
        await consumer.stop_consuming()
        await worker.shutdown()
        await consumer.stop()
        await events.close(within_s=min(10.0, settings.grace_period))
        await producer.stop()
        await oms.close()
        if feed is not None:
            await feed.close()
        await prices.close()
        await store.close()
        await http.stop()
        _log.info("worker stopped", exit_code=code)
    return code
