"""A whole market in memory for tests and the simulation: one database, one venue, one
price source and one event sink, shared by any number of workers built by the production
wiring (`build_worker`) with in-memory parts, on a virtual-time loop.

    rig = Rig(seed=7)
    async with rig.worker("w1") as app:
        await app.worker.start()
        await app.worker.handle_strategies([...])
        await rig.run_for(60)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from strategy_worker.auth import ControlVerifier
from strategy_worker.config import WorkerConfig
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.oms_sim.venue import VenueRules
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.runtime.wiring import App, build_worker
from strategy_worker.store import Store
from strategy_worker.testing.memory_market import MemoryMarketData
from strategy_worker.testing.memory_store import MemoryDatabase, MemoryStore
from strategy_worker.testing.ports import (
    MemoryBarTopic,
    MemoryDeadLetters,
    MemoryPrices,
    MemoryPublisher,
)
from strategy_worker.testing.venue import SimOms
from strategy_worker.testing.virtual_time import VirtualClock

EPOCH = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
"""Virtual time 0: a US market open."""


def default_settings(owner_id: str, **changes: Any) -> RuntimeSettings:
    """The worker's settings for a rig: the shipped defaults, quick stops, no loop-lag
    sampling (virtual time has no lag, and the sampler's wake-ups would slow it)."""
    base = RuntimeSettings(
        owner_id=owner_id, limits=RiskLimits(), close_timeout=10.0, loop_lag_interval=None
    )
    return replace(base, **changes)


class Rig:
    """Shared in-memory world; build workers with `worker(owner_id)`."""

    def __init__(
        self,
        *,
        seed: int = 0,
        rules: VenueRules | None = None,
        lease_seconds: float = 15.0,
        epoch: datetime = EPOCH,
        native_protection: bool | None = None,
        wrap_store: Callable[[MemoryStore], Store] | None = None,
    ) -> None:
        """`native_protection`: the venue holds stops, trails and OCO groups (True), or
        MARKET and LIMIT only (False: the worker emulates); None: as `rules` say."""
        loop = asyncio.get_event_loop()
        self.loop = loop
        self.clock = VirtualClock(loop, epoch=epoch)
        self.db = MemoryDatabase(now=self.clock.now, lease_seconds=lease_seconds)
        self.prices = MemoryPrices(self.clock.timestamp)
        self.oms = SimOms(
            now=self.clock.now,
            prices=lambda symbol: self.prices.prices.get(symbol),
            rules=rules,
            seed=seed,
            native_protection=native_protection,
        )
        self.events = MemoryPublisher(self.clock.timestamp)
        self.dead_letters = MemoryDeadLetters()
        self.market = MemoryMarketData(self.db, now=self.clock.timestamp)
        """`market_bars` (and decision retention) shared by every worker."""
        self.bar_topic = MemoryBarTopic()
        self.stores: dict[str, MemoryStore] = {}
        self.wrap_store = wrap_store
        """What a worker gets instead of its memory handle (e.g. a mirror of it)."""
        self.verifier = ControlVerifier(keys={}, require_signed=False)
        """Development's reading: unsigned requests taken at their word (tests sign
        requests themselves where the identity matters)."""

    def set_prices(self, prices: Mapping[str, Decimal | str], *, announce: bool = True) -> None:
        """The market moves: the price source, the feed and the venue's working orders."""
        exact = {s: Decimal(p) for s, p in prices.items()}
        self.prices.set(exact, announce=announce)
        self.oms.tick(exact)

    @contextlib.asynccontextmanager
    async def worker(
        self,
        owner_id: str,
        *,
        settings: RuntimeSettings | None = None,
        watch: bool = True,
        bar_topic: bool = False,
    ) -> AsyncIterator[App]:
        """A worker built by the production wiring on this rig's parts; with `bar_topic`
        its bars come from `rig.bar_topic`, else it builds them from the prices it reads."""
        store = self.db.handle()
        self.stores[owner_id] = store
        async with build_worker(
            WorkerConfig(),
            store=store if self.wrap_store is None else self.wrap_store(store),
            oms=self.oms,
            prices=self.prices,
            price_feed=self.prices if watch else None,
            publisher=self.events,
            dead_letters=self.dead_letters,
            clock=self.clock,
            settings=settings or default_settings(owner_id),
            control_verifier=self.verifier,
            consume=False,
            serve_http=False,
            migrate=False,
            market=self.market,
            bar_feed=self.bar_topic.feed() if bar_topic else None,
            bar_source="topic",
        ) as app:
            yield app

    async def run_for(self, seconds: float) -> None:
        """Let virtual time pass (every loop and timer of every worker runs meanwhile)."""
        await asyncio.sleep(seconds)
