"""The small interfaces the runtime needs from the outside world.

Adapters (`strategy_worker.adapters.*`, `strategy_worker.oms_sim`) implement them; the
runtime depends only on these protocols, so tests and paper trading swap implementations.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from strategy_worker.domain.orders import ExecutionReport, OmsCapabilities, OmsOrder, OrderIntent


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


class EventSink(Protocol):
    """Where `strategy.execution` events go: Kafka in production, JSON lines in paper mode."""

    async def publish(self, key: str, event: Mapping[str, object]) -> None:
        """Publish one event keyed by strategy id; returns once the sink accepted it."""
        ...

    async def publish_batch(self, key: str, events: Sequence[Mapping[str, object]]) -> None:
        """Publish events in order under one key, waiting for all acks together."""
        ...

    async def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """Where rejected input goes, with its reason; consumption continues after it."""

    async def dead_letter(self, payload: bytes, *, code: str, reason: str, source: str) -> None:
        """Record a rejected message with a machine-readable code and a readable reason."""
        ...
