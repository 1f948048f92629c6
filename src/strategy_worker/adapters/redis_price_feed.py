"""Production `PriceFeed`: fresh prices announced on a Redis pub/sub channel.

Protocol (docs/messages.md, "Prices in Redis"): after it HSETs `<key_prefix><SYMBOL>`, the
market-data side PUBLISHes the symbol on `redis.price_channel` (default `prices.updates`).
The feed subscribes, takes every symbol announced so far (a burst becomes one batch), reads
their prices through `RedisPriceSource.get_prices` (one pipelined round trip; malformed or
stale prices skipped) and yields them.

Pub/sub is fire-and-forget: announcements made while the subscription is down are lost. So a
lost connection (error, or no answer to a ping) is retried with capped, jittered backoff, and
the symbols seen before are re-read once resubscribed; the periodic monitor remains the
safety net in between. Nothing here raises for bad data or for Redis being away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from strategy_worker.adapters.redis_prices import RedisPriceSource, redis_client
from strategy_worker.adapters.retry import Backoff
from strategy_worker.config import RedisSection
from strategy_worker.domain.strategy import SYMBOL_RE
from strategy_worker.errors import TransientError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics

_log = get_logger(__name__)

DEFAULT_BACKOFF = Backoff(base_s=0.05, max_s=5.0)
_MAX_PENDING = 100_000  # distinct symbols waiting to be read; beyond it announcements drop
_MAX_SEEN = 10_000  # symbols re-read after a resubscription


class RedisPriceFeed:
    """Subscribes to the price channel; yields batches of validated fresh prices."""

    def __init__(
        self,
        client: aioredis.Redis,
        source: RedisPriceSource,
        *,
        channel: str,
        backoff: Backoff = DEFAULT_BACKOFF,
        idle_s: float = 5.0,
        max_batch: int = 500,
        metrics: WorkerMetrics | None = None,
        owns_client: bool = True,
    ) -> None:
        if idle_s <= 0 or max_batch < 1:
            raise ValueError("idle_s must be positive and max_batch at least 1")
        self._client = client
        self._source = source
        self._channel = channel
        self._backoff = backoff
        self._idle_s = idle_s
        self._max_batch = max_batch
        self._metrics = metrics
        self._owns_client = owns_client
        self._seen: dict[str, None] = {}
        self._current: _Subscription | None = None
        self.subscriptions = 0
        """How many times the feed (re)subscribed: 1 plus the reconnects."""

    @classmethod
    def from_config(
        cls,
        config: RedisSection,
        source: RedisPriceSource,
        *,
        metrics: WorkerMetrics | None = None,
    ) -> RedisPriceFeed:
        """Its own connection (pub/sub holds one); no retries inside the Redis client, so
        this feed's backoff is the one retry policy."""
        if config.price_channel is None:
            raise ValueError("redis.price_channel is not set")
        client = redis_client(config, retry=Retry(NoBackoff(), 0))
        return cls(client, source, channel=config.price_channel, metrics=metrics)

    async def updates(self) -> AsyncIterator[Mapping[str, Decimal]]:
        """Batches of fresh prices as they are announced; runs until closed or cancelled."""
        pending: dict[str, None] = {}  # an ordered set: symbols announced, not yet read
        failures = 0
        while True:
            subscription = _Subscription(self, pending)
            try:
                await subscription.open()
                self._current = subscription
                if self.subscriptions > 1:
                    # Announcements were lost while we were away: re-read what we know.
                    pending.update(self._seen)
                    _log.info("price channel resubscribed", channel=self._channel[:64])
                while True:
                    await subscription.wait_for_symbols()
                    batch = list(itertools.islice(pending, self._max_batch))
                    prices = await self._source.get_prices(batch)
                    for symbol in batch:
                        del pending[symbol]
                    if len(self._seen) < _MAX_SEEN:
                        self._seen.update(dict.fromkeys(prices))
                    if prices:
                        yield prices
            except (RedisError, OSError, TransientError) as exc:
                # Escalate the backoff only while Redis does not even confirm a subscription.
                failures = 1 if subscription.confirmed else failures + 1
                delay = self._backoff.delay(failures)
                _log.warning(
                    "price channel lost; resubscribing (the monitor cycle covers the gap)",
                    error=f"{type(exc).__name__}: {exc}"[:200],
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
            finally:
                self._current = None
                await subscription.close()

    async def ping(self) -> bool:
        """Readiness: True while the feed is subscribed and Redis answered on the
        subscription within 1.5 idle periods (the feed pings a quiet channel every idle
        period, so a live subscription always has). No I/O: it reads the feed's state.

        False before `updates()` first subscribes, while it resubscribes after a lost
        connection, and once it is closed. The periodic monitor still protects positions
        meanwhile; whether that makes the worker unready is the caller's choice."""
        subscription = self._current
        return subscription is not None and subscription.alive()

    def _announced(self, data: object, pending: dict[str, None]) -> bool:
        """Add an announced symbol to `pending`; False (counted) for anything else."""
        symbol = _symbol(data)
        if symbol is None:
            self._skip("malformed_symbol")
            return False
        if symbol not in pending:
            if len(pending) >= _MAX_PENDING:
                self._skip("overflow")
                return False
            pending[symbol] = None
        return True

    def _skip(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.prices_skipped.labels(reason=reason).inc()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class _Subscription:
    """One subscription: a reader task files announcements into `pending`, and a silent
    channel is pinged; no answer within two idle periods means the connection is dead."""

    def __init__(self, feed: RedisPriceFeed, pending: dict[str, None]) -> None:
        self._feed = feed
        self._pending = pending
        self._pubsub = feed._client.pubsub()
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._heard = 0.0
        self.confirmed = False
        """Redis answered on this subscription (at least its confirmation)."""

    async def open(self) -> None:
        await self._pubsub.subscribe(self._feed._channel)
        self._feed.subscriptions += 1
        self._heard = asyncio.get_running_loop().time()
        self._reader = asyncio.create_task(self._read(), name="price-channel-reader")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Blocking reads only: a read is never cut off half-way through a reply.
                message: dict[str, Any] | None = await self._pubsub.get_message(timeout=None)
                self._heard = loop.time()
                self.confirmed = True
                if message is None or message.get("type") != "message":
                    continue  # subscribe confirmations and pongs: proof of life only
                if self._feed._announced(message.get("data"), self._pending):
                    self._ready.set()
        finally:
            self._ready.set()  # wake the consumer to see why we stopped

    async def wait_for_symbols(self) -> None:
        """Return once a symbol is pending; raise when the connection is lost."""
        loop = asyncio.get_running_loop()
        idle = self._feed._idle_s
        while not self._pending:
            self._check_reader()
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle):
                    await self._ready.wait()
                continue
            if loop.time() - self._heard >= 1.5 * idle:
                raise RedisConnectionError("price channel: no answer to ping")
            await self._pubsub.ping()

    def alive(self) -> bool:
        """Confirmed by Redis, still reading, and heard from within 1.5 idle periods."""
        reader = self._reader
        if not self.confirmed or reader is None or reader.done():
            return False
        return asyncio.get_running_loop().time() - self._heard < 1.5 * self._feed._idle_s

    def _check_reader(self) -> None:
        reader = self._reader
        if reader is not None and reader.done():
            exc = reader.exception()
            raise exc if exc is not None else RedisConnectionError("price channel reader ended")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


def _symbol(data: object) -> str | None:
    """A symbol from its announcement, or None when it is not a valid symbol."""
    if isinstance(data, bytes):
        if len(data) > 16:
            return None
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(data, str):
        return None
    text = data.strip()
    return text if SYMBOL_RE.fullmatch(text) else None
