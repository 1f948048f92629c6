"""Prices in, monitor steps out: the periodic cycle and the price watch share one path.

Both hand new marks to one observation (`Monitor._observe`; the price watch's
`on_prices` through `_observe_and_act`, which acts in growing chunks), which runs the one
monitor step (`decide.monitor`) only for the executions the marks can affect (`may_act`):
a stop level or warning zone reached or left, a blocked symbol that may re-arm, the daily
loss floor, a day roll, a plan in progress, or a protective leg the mark would trigger
(`protection.observe`, which ratchets the trailing watermarks of the others in place). The
others only take the marks; on the periodic cycle their valuation, snapshot and ratcheted
protection state are written in one batched statement (`Store.record_marks`) that never
overwrites a newer commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from strategy_worker.domain.clock import Clock
from strategy_worker.domain.money import ZERO, quantize_price
from strategy_worker.domain.risk.stop_loss import stop_level
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import PriceSource
from strategy_worker.runtime import decide as rules
from strategy_worker.runtime import protection
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.engine import Engine
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.step import Step, snapshot_of
from strategy_worker.store import MarkWrite, Store

_log = get_logger(__name__)

BATCH = 500
"""Executions per monitor commit (and per batched quiet write)."""
_RAMP = (8, 16, 32, 64, 128, 256)
"""The first monitor commits of a cycle or a price update, before BATCH: the first orders
leave after 8 executions were decided, not 500 (a stop-loss storm's first close)."""
_ONE = Decimal(1)
_CENT = Decimal("0.01")  # margin on the loss floor: at the edge the full step decides


class Monitor:
    """The monitor cycle and the price reaction of one worker."""

    def __init__(
        self,
        *,
        book: ExecutionBook,
        engine: Engine,
        prices: PriceSource,
        store: Store,
        clock: Clock,
        metrics: WorkerMetrics,
        drift_threshold: Decimal,
        protection_desk: protection.ProtectionDesk | None = None,
    ) -> None:
        self._protection = protection_desk
        self._book = book
        self._engine = engine
        self._prices = prices
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._threshold = drift_threshold
        self.observed: Callable[[Mapping[str, Decimal]], None] = lambda prices: None
        """Sees every batch of prices the monitor reads (the wiring points it at the signal
        desk, which builds bars from them when no bar topic is configured)."""

    # ------------------------------------------------------------------ the cycles

    async def cycle(self) -> None:
        """Every position_check_interval: marks for every execution, the monitor step for
        those they can affect, a snapshot of each."""
        started = time.perf_counter()
        runners = self._book.running()
        if not runners:
            return
        prices = await self._prices.get_prices(_symbols(runners))
        acting = self._observe(runners, prices)
        moved = {r.execution_id for r in acting}
        quiet = [r for r in runners if r.execution_id not in moved]
        for chunk in _ramp(acting):
            await self._engine.act_many(chunk, _monitor_and_snapshot)
            await asyncio.sleep(0)  # what was just committed leaves before the next chunk
        for chunk in _chunks(quiet):
            await self._quiet(chunk)
        if self._protection is not None:
            self._protection.recount(self._book.running())
        self._metrics.monitor_cycle_seconds.observe(time.perf_counter() - started)

    async def on_prices(self, prices: Mapping[str, Decimal]) -> int:
        """Announced prices: the monitor step for the executions they can affect, now;
        returns how many needed it."""
        runners = [r for r in self._book.touching(prices) if r.running and not r.dirty]
        if not runners:
            return 0
        missing = sorted(
            {s for r in runners for s in r.model.portfolio.positions if s not in r.marks}
            - set(prices)
        )
        marks = prices
        if missing:  # never valued since resumed: its other marks come from the source
            marks = {**(await self._prices.get_prices(missing)), **prices}
        return await self._observe_and_act(runners, marks)

    async def check(self, runners: Sequence[ExecutionRunner]) -> int:
        """Marks for these executions now, and the monitor step where they can affect
        them: a resumed execution learns at once of a level passed while nobody watched
        (the feed does not replay what it announced before). Returns how many acted."""
        runners = [r for r in runners if r.running and not r.dirty and self._book.is_current(r)]
        if not runners:
            return 0
        prices = await self._prices.get_prices(_symbols(runners))
        acting = self._observe(runners, prices)
        for chunk in _chunks(acting):
            await self._engine.act_many(chunk, rules.monitor)
        return len(acting)

    async def rebalance_cycle(self) -> None:
        """Every rebalance_interval: plan a rebalance where drift exceeds the threshold.
        No execution waits for another: sells go out, buys follow their fills."""
        runners = [r for r in self._book.running() if r.model.status.value == "active"]
        if not runners:
            return
        started = time.perf_counter()
        prices = await self._prices.get_prices(_symbols(runners))
        self._observe(runners, prices)
        threshold = self._threshold
        for chunk in _chunks(runners):
            await self._engine.act_many(chunk, lambda s: rules.rebalance(s, threshold))
        self._metrics.rebalance_seconds.observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ helpers

    async def _observe_and_act(
        self, runners: Sequence[ExecutionRunner], prices: Mapping[str, Decimal]
    ) -> int:
        """Give each runner its marks and run the monitor step for those they can affect,
        in chunks that start small and grow (`_RAMP`), yielding after each: when one price
        crosses thousands of stops, the first closes leave after a few executions were
        decided and committed, not after all of them."""
        self.observed(prices)
        at = self._clock.now()
        sizes = iter(_RAMP)
        want = next(sizes)
        acting: list[ExecutionRunner] = []
        done = 0
        for runner in runners:
            if self._give(runner, prices, at):
                acting.append(runner)
            if len(acting) >= want:
                await self._engine.act_many(acting, rules.monitor)
                done += len(acting)
                acting = []
                want = next(sizes, BATCH)
                await asyncio.sleep(0)  # the closes just committed leave first
        if acting:
            await self._engine.act_many(acting, rules.monitor)
            done += len(acting)
        return done

    def _observe(
        self, runners: Sequence[ExecutionRunner], prices: Mapping[str, Decimal]
    ) -> list[ExecutionRunner]:
        """Give each runner its marks; returns those the marks can affect."""
        self.observed(prices)
        at = self._clock.now()
        return [r for r in runners if self._give(r, prices, at)]

    def _give(self, runner: ExecutionRunner, prices: Mapping[str, Decimal], at: datetime) -> bool:
        """One runner's marks (and its protection's); True when they can affect it."""
        own = _own(runner, prices)
        now = at.timestamp()
        protect = protection.observe(runner, own, at)
        acts = may_act(runner, own, now) or protect
        runner.observe(own, now)
        self._book.refresh(runner)
        return acts

    async def _quiet(self, runners: Sequence[ExecutionRunner]) -> None:
        """Valuation and snapshot of executions the marks did not affect, in one write."""
        writes: list[MarkWrite] = []
        written: list[ExecutionRunner] = []
        at = self._clock.now()
        for runner in runners:
            if runner.dirty or not self._book.is_current(runner):
                continue
            val = runner.valuation()
            model = runner.model
            writes.append(
                MarkWrite(
                    execution_id=runner.execution_id,
                    fence=runner.fence,
                    version=model.version,
                    unrealized_pnl=val.unrealized_pnl,
                    total_pnl=val.total_pnl,
                    snapshot=snapshot_of(
                        runner.execution_id, model.portfolio, val, at, model.version
                    ),
                    protection=protection.mark_write(runner),
                    exposure=runner.exposure(),
                    marks={s: p.mark for s, p in val.positions.items()},
                )
            )
            written.append(runner)
        if writes:
            missed = await self._store.record_marks(writes)
            for runner, write in zip(written, writes, strict=True):
                if runner.execution_id not in missed and write.exposure is not None:
                    self._book.hold(runner, write.exposure)


def _monitor_and_snapshot(step: Step) -> None:
    rules.monitor(step)
    step.snapshot()


def may_act(runner: ExecutionRunner, prices: Mapping[str, Decimal], now: float) -> bool:
    """Whether the monitor step at `prices` could do more than move marks. False only when
    no plan is in progress, no day roll is due, no symbol of the batch reaches or leaves its
    stop-loss warning zone or is blocked (may re-arm), and the equity stays above the day's
    loss floor. Checked against the marks the runner held before `prices`."""
    model = runner.model
    risk = model.risk
    plans = model.plans
    if plans.stop is not None or plans.deferred or plans.rebalance_drift is not None:
        return True
    if plans.day_start_pending or now >= risk.next_day_ts:
        return True
    stops = risk.stops
    pct = stops.stop_loss_pct
    positions = model.portfolio.positions
    marks = runner.marks
    equity_change = ZERO
    for symbol, mark in prices.items():
        if stops.is_blocked(symbol):
            return True
        pos = positions.get(symbol)
        if pos is None:
            continue
        before = marks.get(symbol)
        if mark <= 0 or before is None:
            return True  # first mark since resumed: let the full step decide
        if pct is not None:
            top = quantize_price(stop_level(pos, pct) * (_ONE + stops.buffer))
            if mark <= top or before <= top:
                return True
        equity_change += pos.quantity * (mark - before)
    if any(s not in marks for s in positions):
        return True
    if risk.halted or not risk.day_start_known:
        return False
    return runner.valuation().equity + equity_change <= risk.loss_floor + _CENT


def _own(runner: ExecutionRunner, prices: Mapping[str, Decimal]) -> dict[str, Decimal]:
    targets = runner.info.targets
    positions = runner.model.portfolio.positions
    return {s: p for s, p in prices.items() if s in targets or s in positions}


def _symbols(runners: Sequence[ExecutionRunner]) -> list[str]:
    return sorted({s for r in runners for s in (*r.info.targets, *r.model.portfolio.positions)})


def _chunks(runners: Sequence[ExecutionRunner]) -> list[Sequence[ExecutionRunner]]:
    return [runners[i : i + BATCH] for i in range(0, len(runners), BATCH)]


def _ramp(runners: Sequence[ExecutionRunner]) -> list[Sequence[ExecutionRunner]]:
    """Chunks of `_RAMP`'s growing sizes, then of BATCH."""
    out: list[Sequence[ExecutionRunner]] = []
    sizes = iter(_RAMP)
    i = 0
    while i < len(runners):
        n = next(sizes, BATCH)
        out.append(runners[i : i + n])
        i += n
    return out
