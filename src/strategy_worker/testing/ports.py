"""In-memory ports for tests and the simulation: prices (polled and announced), the event
publisher, dead letters, the bar topic. Each can be made to fail, as the real ones do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from strategy_worker.domain.signals.bars import Bar
from strategy_worker.errors import StrategyWorkerError, TransientError
from strategy_worker.ports import BarBatch
from strategy_worker.store import OutboxEvent


class MemoryPrices:
    """`PriceSource` and `PriceFeed`: `set()` writes a mark (and announces it)."""

    def __init__(self, now: Callable[[], float] | None = None, *, max_age: float = 120.0) -> None:
        self._now = now
        self._max_age = max_age
        self.prices: dict[str, Decimal] = {}
        self.times: dict[str, float] = {}
        self.down_until = float("-inf")
        self._subscribers: list[asyncio.Queue[dict[str, Decimal]]] = []

    def set(self, prices: Mapping[str, Decimal], *, announce: bool = True) -> None:
        at = self._now() if self._now else 0.0
        for symbol, price in prices.items():
            self.prices[symbol] = price
            self.times[symbol] = at
        if announce:
            for queue in self._subscribers:
                queue.put_nowait(dict(prices))

    def forget(self, symbol: str) -> None:
        self.prices.pop(symbol, None)
        self.times.pop(symbol, None)

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        if self._now and self._now() < self.down_until:
            raise TransientError("price source unavailable (simulated)")
        now = self._now() if self._now else 0.0
        return {
            s: self.prices[s]
            for s in symbols
            if s in self.prices and now - self.times.get(s, now) <= self._max_age
        }

    async def ping(self) -> bool:
        return not (self._now and self._now() < self.down_until)

    async def updates(self) -> AsyncIterator[Mapping[str, Decimal]]:
        queue: asyncio.Queue[dict[str, Decimal]] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Published:
    event: OutboxEvent
    at: float


class MemoryPublisher:
    """`EventPublisher` keeping what it was given, in order (repeats included)."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._now = now
        self.published: list[Published] = []
        self.down_until = float("-inf")
        self.refuse: Callable[[OutboxEvent], bool] = lambda event: False
        self.ack_delay = 0.0
        """Seconds between the records leaving and their acknowledgement (Kafka's round
        trip): a relay cut off meanwhile has sent them without knowing it."""

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        now = self._now() if self._now else 0.0
        if now < self.down_until:
            raise TransientError("broker unavailable (simulated)")
        for event in events:
            if self.refuse(event):
                raise StrategyWorkerError("record refused (simulated)", retryable=False)
        self.published.extend(Published(e, now) for e in events)
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)

    def unique(self) -> dict[object, OutboxEvent]:
        """What a consumer dropping repeats by event id sees."""
        out: dict[object, OutboxEvent] = {}
        for p in self.published:
            out.setdefault(p.event.event_id, p.event)
        return out

    async def close(self) -> None:
        return None


class MemoryDeadLetters:
    """`DeadLetterSink` keeping (code, reason, source, payload)."""

    def __init__(self) -> None:
        self.letters: list[tuple[str, str, str, bytes]] = []

    async def dead_letter(self, payload: bytes, *, code: str, reason: str, source: str) -> None:
        self.letters.append((code, reason, source, payload))


class MemoryBarTopic:
    """The bar topic in memory: `publish` sends closed bars to every worker's feed that is
    reading (like `KafkaBarFeed`, no consumer group; a feed started later reads from then)."""

    def __init__(self) -> None:
        self._feeds: list[MemoryBarFeed] = []
        self.published: list[Bar] = []

    def feed(self) -> MemoryBarFeed:
        feed = MemoryBarFeed(self)
        self._feeds.append(feed)
        return feed

    def publish(self, bars: Sequence[Bar]) -> None:
        self.published.extend(bars)
        for feed in self._feeds:
            if feed.started and not feed.stopped:
                feed.queue.put_nowait(BarBatch(tuple(bars)))


class MemoryBarFeed:
    """One worker's `BarFeed` on a `MemoryBarTopic`."""

    def __init__(self, topic: MemoryBarTopic) -> None:
        self.topic = topic
        self.queue: asyncio.Queue[BarBatch | None] = asyncio.Queue()
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        while not self.stopped:
            batch = await self.queue.get()
            if batch is None:
                return
            yield batch

    async def stop(self) -> None:
        self.stopped = True
        self.queue.put_nowait(None)
