"""Replaying a bar or price file through the worker on the file's own timestamps.

Paper mode feeds bars to the worker exactly as the bar topic does in production
(`ReplayBarFeed` is a `BarFeed`: the same `SignalDesk.pump`, gate, storage, engines and
steps), and prices from the same file (`BarClosePrices` for an OHLCV file: a bar's close is
known at its end; `oms_sim.prices.ReplayPrices` for a `timestamp,symbol,price` file).

Two clocks:

- `AcceleratedClock` (`--speed N`): N simulated seconds per real second, as before;
- `SteppedClock` (`--speed max`): simulated time moves only when `drive` moves it, from
  one bar end to the next, as soon as the worker is done with the bars of the instant
  before (their decisions committed, their market orders filled and booked). Years of
  daily bars replay in as long as the engine takes; every loop of the worker that sleeps
  on the clock (monitor, rebalancing, timers) wakes once per instant it slept past.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.clock import Clock
from strategy_worker.domain.orders import OrderType
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.log import get_logger
from strategy_worker.ports import BarBatch
from strategy_worker.runtime.clocks import AcceleratedClock
from strategy_worker.runtime.wiring import App

_log = get_logger(__name__)

_QUIET_S = 0.002
"""Real seconds between two looks at whether the worker is done with an instant."""
_INSTANT_LIMIT_S = 10.0
"""Real seconds one instant may take before the replay moves on anyway (logged)."""


class SteppedClock:
    """Simulated time that moves only by `advance_to` (see the module docstring); once
    `run_freely` is called it runs like an `AcceleratedClock` from where it stood."""

    def __init__(self, *, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._free: AcceleratedClock | None = None

    def now(self) -> datetime:
        return self._free.now() if self._free is not None else self._now

    def timestamp(self) -> float:
        return self.now().timestamp()

    @property
    def speed(self) -> float:
        return self._free.speed if self._free is not None else float("inf")

    @property
    def next_wake(self) -> datetime | None:
        """The earliest instant a sleeper waits for (None: nobody sleeps)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        """Until the clock has moved `seconds` on (at once when it runs freely)."""
        if self._free is not None:
            await self._free.sleep(seconds)
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    def advance_to(self, moment: datetime) -> None:
        """Move to `moment` (never backwards) and wake every sleeper due by then."""
        if moment > self._now:
            self._now = moment
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def run_freely(self, speed: float) -> None:
        """From now on, `speed` simulated seconds per real second (the end of a replay:
        the shutdown's closing orders and stops need time to pass); sleepers wake now."""
        self._free = AcceleratedClock(start=self._now, speed=speed)
        for _, _, future in self._sleepers:
            if not future.done():
                future.set_result(None)
        self._sleepers.clear()


class BarClosePrices:
    """The marks an OHLCV file implies: a symbol's price at `clock.now()` is the close of
    its last bar that had ended by then (implements `PriceSource`)."""

    def __init__(self, bars: Iterable[Bar], *, clock: Clock) -> None:
        self._clock = clock
        series: dict[str, tuple[list[datetime], list[Decimal]]] = {}
        for bar in sorted(bars, key=lambda b: (b.end, b.timeframe.seconds)):
            ends, closes = series.setdefault(bar.symbol, ([], []))
            if ends and ends[-1] == bar.end:
                closes[-1] = bar.close  # the longer bar's close at the same instant
                continue
            ends.append(bar.end)
            closes.append(bar.close)
        self._series = series

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        now = self._clock.now()
        out: dict[str, Decimal] = {}
        for symbol in symbols:
            series = self._series.get(symbol)
            if series is None:
                continue
            index = bisect.bisect_right(series[0], now)
            if index > 0:
                out[symbol] = series[1][index - 1]
        return out

    async def close(self) -> None:
        return None


class ReplayBarFeed:
    """A file's closed bars as a `BarFeed`: each batch is the bars that ended at one
    instant, yielded once the clock reaches it (in file order: end, symbol, timeframe)."""

    def __init__(self, bars: Iterable[Bar], *, clock: AcceleratedClock | SteppedClock) -> None:
        self._clock = clock
        ordered = sorted(bars, key=lambda b: (b.end, b.symbol, b.timeframe.seconds))
        self._instants: list[tuple[datetime, list[Bar]]] = []
        for bar in ordered:
            if self._instants and self._instants[-1][0] == bar.end:
                self._instants[-1][1].append(bar)
            else:
                self._instants.append((bar.end, [bar]))
        self._next = 0
        self.delivered = 0
        """Bars handed to the consumer so far."""
        self.consumed = 0
        """Batches the consumer has come back for after handling them (so: done with)."""
        self._progress = asyncio.Event()
        self._stopped = False

    @property
    def bars(self) -> int:
        return sum(len(batch) for _, batch in self._instants)

    @property
    def next_end(self) -> datetime | None:
        """The instant of the next batch not yet delivered (None: the file is done)."""
        return self._instants[self._next][0] if self._next < len(self._instants) else None

    @property
    def first_start(self) -> datetime | None:
        if not self._instants:
            return None
        return min(b.start for b in self._instants[0][1])

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._stopped = True

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        while not self._stopped and self._next < len(self._instants):
            end, batch = self._instants[self._next]
            wait = (end - self._clock.now()).total_seconds()
            if wait > 0:
                await self._clock.sleep(wait)
                continue
            self._next += 1
            self.delivered += len(batch)
            yield BarBatch(tuple(batch))
            self.consumed = self._next
            self._progress.set()

    @property
    def pending(self) -> int:
        """Index of the next batch to deliver."""
        return self._next

    async def consumed_through(self, batches: int, *, within: float) -> bool:
        """Wait until the consumer is done with the first `batches` batches (False when it
        took longer than `within` real seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.consumed < batches and not self._stopped:
            self._progress.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), timeout=left)
            except TimeoutError:
                return False
        return True


async def drive(
    app: App,
    feed: ReplayBarFeed,
    clock: SteppedClock,
    *,
    until: datetime,
    stop: asyncio.Event,
    on_instant: Callable[[], None] = lambda: None,
) -> int:
    """`--speed max`: move the clock from one bar end to the next, each time once the
    worker is done with the instant before; returns the bars replayed. Ends at `until`,
    when the file is done, or when `stop` is set."""
    worker = app.worker
    while not stop.is_set():
        moment = feed.next_end
        if moment is None or moment > until:
            break
        target = feed.pending + 1
        clock.advance_to(moment)
        started = time.perf_counter()
        done = await feed.consumed_through(target, within=_INSTANT_LIMIT_S)
        while done and not stop.is_set() and not _done_with(app):
            if time.perf_counter() - started > _INSTANT_LIMIT_S:
                done = False
                break
            await asyncio.sleep(_QUIET_S)
        if not done:
            _log.warning("replay instant took too long; moving on", at=moment.isoformat())
        if worker.supervisor.failure is not None:
            break
        on_instant()
    return feed.delivered


def _done_with(app: App) -> bool:
    """The worker has nothing left from the last instant: bars evaluated and committed, no
    market order waiting for its fill, nothing to reload."""
    worker = app.worker
    desk = worker.signals
    if desk is not None and not desk.idle:
        return False
    for runner in worker.book:
        if runner.dirty:
            return False
        if any(o.intent.order_type is OrderType.MARKET for o in runner.model.live_orders()):
            return False
    return True
