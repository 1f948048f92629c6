"""The small interfaces the runtime needs from the outside world.

Adapters (`strategy_worker.adapters.*`, `strategy_worker.oms_sim`) implement them; the
runtime depends only on these protocols, so tests and paper trading swap implementations.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from strategy_worker.domain.orders import ExecutionReport, OmsCapabilities, OmsOrder, OrderIntent
from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.timeframes import Timeframe
from strategy_worker.errors import OmsError
from strategy_worker.store import OutboxEvent


@dataclass(frozen=True, slots=True)
class SubmitEntry:
    """One entry of a submission batch: one order, or (`group`) orders the OMS accepts
    atomically (a bracket, an OCO group). Entries of one batch may belong to any
    executions and accounts."""

    intents: tuple[OrderIntent, ...]
    account_id: str
    group: bool = False


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What became of one entry: the OMS's view of each of its orders (entry order), or
    `error` when the OMS refused the entry (then none of its orders exists there)."""

    orders: tuple[OmsOrder, ...] = ()
    error: OmsError | None = None


class OmsGateway(Protocol):
    """The Order Management Service as the worker sees it (gRPC in production)."""

    async def submit(self, intent: OrderIntent, *, account_id: str) -> OmsOrder:
        """Submit an order; idempotent on `intent.client_order_id` (returns the existing one)."""
        ...

    async def submit_many(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        """Submit a batch over the streaming path; same idempotency as `submit`."""
        ...

    async def submit_group(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        """Submit orders atomically (a bracket, an OCO group): all accepted or none; same
        idempotency as `submit`. Only when `capabilities().order_groups`."""
        ...

    async def submit_batch(self, entries: Sequence[SubmitEntry]) -> list[SubmitOutcome]:
        """Submit the orders of many executions at once (contract 1.2's OrderBatch on one
        shared stream where the OMS takes batches, else its per-order path): one outcome
        per entry, in order, each with `submit`'s idempotency (a group `submit_group`'s
        atomicity). Raises OmsError when the batch as a whole was not answered; whether
        any of it reached the OMS is then unknown (retryable: resubmit the same ids)."""
        ...

    async def capabilities(self) -> OmsCapabilities:
        """What the OMS holds natively (order types, OCO groups, brackets, reduce-only);
        `OmsCapabilities.baseline()` for an OMS that predates the question."""
        ...

    async def cancel(self, client_order_id: str) -> OmsOrder:
        """Request a cancel; the order may still fill before the cancel lands."""
        ...

    async def get_order(self, client_order_id: str) -> OmsOrder | None:
        """The OMS's view of an order, or None when it has never heard of it."""
        ...

    async def list_orders(self, execution_id: uuid.UUID) -> list[OmsOrder]:
        """Every order the OMS holds for an execution (for reconciliation)."""
        ...

    async def get_positions(self, execution_id: uuid.UUID) -> dict[str, Decimal]:
        """Net position per symbol the OMS holds for an execution (for reconciliation)."""
        ...

    def reports(self, *, from_seq: int) -> AsyncIterator[ExecutionReport]:
        """Execution reports with seq > from_seq, resuming transparently after reconnects."""
        ...

    async def ping(self) -> bool:
        """True when the OMS answers (readiness)."""
        ...

    async def close(self) -> None: ...


class PriceSource(Protocol):
    """Last trade (mark) prices per symbol; Redis in production, simulated in paper mode."""

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """Prices for the symbols it knows; a symbol without a price is left out."""
        ...

    async def close(self) -> None: ...


class PriceFeed(Protocol):
    """Fresh prices as the market-data side publishes them (Redis pub/sub in production).

    Optional: it lets stop-losses react to the price rather than to the monitor's clock;
    the periodic monitor (`PriceSource`) stays the safety net for anything a feed misses.
    """

    def updates(self) -> AsyncIterator[Mapping[str, Decimal]]:
        """Batches of fresh, validated prices (symbol -> price), until cancelled; an outage
        is ridden out (reconnecting) rather than raised, bad data skipped."""
        ...


class OrderRateLimit(Protocol):
    """A rate limit toward the OMS shared by the fleet (Redis); optional."""

    async def take(self, *, ordinary: int, forced: int) -> tuple[int, float]:
        """Take `forced` tokens whatever is left (closing orders are never throttled) and up
        to `ordinary` more; returns how many ordinary orders may go now and the seconds until
        the next token. A retryable error when the limit cannot be asked."""
        ...

    async def close(self) -> None: ...


class Probe(Protocol):
    """A dependency's readiness check (`/ready`): answers within its own bound, never raises.

    `RedisPriceSource` (a PING within `redis.socket_timeout`) and `RedisPriceFeed` (its
    subscription is confirmed and alive; no I/O) implement it, as do the store and the OMS
    client."""

    async def ping(self) -> bool:
        """True when the dependency answers now."""
        ...


class EventPublisher(Protocol):
    """Where the outbox relay publishes `strategy.execution` events: Kafka in production,
    JSON lines in paper mode. The runtime never publishes directly: an event exists once it
    is committed to the outbox, and the relay hands it over here, in commit order."""

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Publish in order and return once every one is acknowledged. A retryable
        StrategyWorkerError means "try the same batch again later"; a non-retryable one
        means a record was refused for good (the relay then sends one by one to find it)."""
        ...

    async def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """Where rejected input goes, with its reason; consumption continues after it."""

    async def dead_letter(self, payload: bytes, *, code: str, reason: str, source: str) -> None:
        """Record a rejected message with a machine-readable code and a readable reason."""
        ...


@dataclass(frozen=True, slots=True)
class RejectedBar:
    """A bar message that could not be read: where it came from and why (code, field)."""

    source: str
    rejection: Rejection


@dataclass(frozen=True, slots=True)
class BarBatch:
    """Bars that arrived together, parsed, in arrival order (give them to a `BarGate`)."""

    bars: tuple[Bar, ...]
    rejected: tuple[RejectedBar, ...] = ()


class BarFeed(Protocol):
    """Closed bars from the market-data side (Kafka `kafka.topics.bars` in production).

    Every worker needs every bar of its executions' symbols, so a feed reads the whole
    topic (no consumer group). An outage is ridden out, never raised; malformed messages
    arrive as `rejected` entries, never as exceptions.
    """

    async def start(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[BarBatch]:
        """Batches until `stop()` (or cancellation)."""
        ...

    async def stop(self) -> None:
        """Idempotent; ends the iteration."""
        ...


class BarStore(Protocol):
    """Stored closed bars and pruning of bars and signal decisions (`market_bars`,
    `signal_decisions`): `adapters/postgres/market_data.MarketDataStore` in production,
    `testing/memory_market.MemoryMarketData` in tests. Errors are `StoreError`."""

    async def upsert_bars(
        self, bars: Sequence[Bar], *, source: str, received_at: datetime, replace: bool = False
    ) -> int:
        """Write bars (the first version of a bar stays unless `replace`); returns how many."""
        ...

    async def load_warmup(
        self, streams: Iterable[tuple[str, Timeframe]], *, bars: int, before: datetime
    ) -> dict[tuple[str, Timeframe], list[Bar]]:
        """The last `bars` bars of each stream that started before `before`, oldest first."""
        ...

    async def load_range(
        self, symbols: Sequence[str], tf: Timeframe, *, since: datetime, until: datetime
    ) -> list[Bar]:
        """Every stored bar of `symbols` on `tf` with since <= start < until, oldest first."""
        ...

    async def prune(
        self, *, decisions_before: datetime, bars_before: datetime | None = None, batch: int = ...
    ) -> object:
        """Delete decisions decided before `decisions_before` and, when given, bars that
        started before `bars_before` (retention)."""
        ...
