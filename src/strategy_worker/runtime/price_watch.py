"""React to the price, not the clock: a stop-loss or the daily loss limit acts within
milliseconds of the price that crossed it instead of at the next monitor cycle.

For each batch of `PriceFeed.updates()`, only the running executions that hold one of its
symbols (or are blocked on one by a past stop-out, so it can re-arm), and for which the new
marks can change something (`may_act`: a stop level or warning zone reached or left, a
re-arm, a daily loss halt, a day roll), get the monitor's own step: `ExecutionRunner.monitor`
under the runner's lock, stop-loss intents recorded before they are sent, events published
once durable, one failing execution never disturbing another (`Worker.guard`). The stop-loss
hysteresis and the sells already in flight keep a stop from being sent twice, whether the
watch or the monitor saw the price first. No snapshot here: snapshots stay on the cadence,
and the periodic monitor remains the safety net for whatever the feed misses.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from strategy_worker.domain.money import ZERO, quantize_price
from strategy_worker.domain.risk.stop_loss import stop_level
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.ports import PriceFeed
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import Outbox

if TYPE_CHECKING:
    from strategy_worker.runtime.worker import Worker

_log = get_logger(__name__)

_YIELD_EVERY = 64  # runners checked between two turns of the event loop
_RESTART_S = 1.0  # before resubscribing when a feed ended or failed
_ONE = Decimal(1)
_CENT = Decimal("0.01")  # margin on the loss floor: at the edge the full step decides


class PriceWatch:
    """Consumes a price feed and runs the monitor step for the executions each batch moves."""

    def __init__(self, worker: Worker, feed: PriceFeed) -> None:
        self._worker = worker
        self._feed = feed
        self._index = _SymbolIndex()

    async def run(self) -> None:
        """Until cancelled. A retryable failure skips a batch (the monitor cycle covers it);
        any other error propagates and stops the worker, like every background loop."""
        while True:
            updates = self._feed.updates()
            try:
                async for prices in updates:
                    try:
                        await self.on_prices(prices)
                    except StrategyWorkerError as exc:
                        if not exc.retryable:
                            raise
                        _log.warning("price reaction skipped; next cycle covers it", error=str(exc))
            except StrategyWorkerError as exc:
                if not exc.retryable:
                    raise
                _log.warning("price feed failed; resubscribing", error=str(exc))
            finally:
                await _close(updates)
            await asyncio.sleep(_RESTART_S)

    async def on_prices(self, prices: Mapping[str, Decimal]) -> int:
        """Check the executions `prices` concern; returns how many needed the full step."""
        worker = self._worker
        runners = self._index.affected(worker.runners, prices)
        if not runners:
            return 0
        # A runner never valued since it was resumed has no marks for its other symbols:
        # read them now, so its equity is never valued at a stale fill price.
        missing = {
            s
            for r in runners
            if r.last_valuation is None
            for s in r.portfolio.positions
            if s not in prices and s not in r.last_prices
        }
        marks = prices
        if missing:
            marks = {**(await worker.prices.get_prices(sorted(missing))), **prices}
        now = worker.clock.now().timestamp()
        checked = 0
        for count, runner in enumerate(runners, start=1):
            own = _own(runner, marks)
            if worker.runners.get(runner.execution_id) is runner and may_act(runner, own, now):
                checked += 1
                await worker.guard(runner, self._check(runner, own))
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # thousands of executions on one symbol: let others run
        return checked

    async def _check(self, runner: ExecutionRunner, prices: Mapping[str, Decimal]) -> None:
        """`Worker._monitor_one` without the snapshot; state is written only when the step
        changed something worth keeping (intents, or a risk event such as a halt)."""
        async with runner.lock:
            if not runner.running or runner.dirty:
                return  # stopped, failed or to be reloaded while we waited for the lock
            out = Outbox()
            intents = runner.monitor(prices, out)
            # record_intents writes the new state together with the intents.
            await runner.record_and_submit(intents, out)
            if out.risk_rows and not intents:
                await self._worker.store.update_execution_state(
                    runner.execution_id, runner.state(), fence=runner.fence
                )
            if intents:
                _log.info(
                    "price crossed a stop; orders sent",
                    execution_id=str(runner.execution_id),
                    orders=len(intents),
                )
            await runner.flush(out)


class _SymbolIndex:
    """symbol -> runners that target or hold it, rebuilt only when the set of runners changed
    (compared by identity, cheap for 10,000 runners), so a batch costs what it touches."""

    def __init__(self) -> None:
        self._runners: list[ExecutionRunner] = []
        self._by_symbol: dict[str, list[ExecutionRunner]] = {}

    def affected(
        self, runners: Mapping[uuid.UUID, ExecutionRunner], symbols: Iterable[str]
    ) -> list[ExecutionRunner]:
        current = list(runners.values())
        if current != self._runners:  # ExecutionRunner has identity equality
            self._rebuild(current)
        found: dict[int, ExecutionRunner] = {}
        for symbol in symbols:
            for runner in self._by_symbol.get(symbol, ()):
                if id(runner) in found or not runner.running or runner.dirty:
                    continue
                # Only a held position moves equity or can stop out; a blocked symbol can
                # re-arm. A symbol merely targeted changes nothing until it is bought.
                if symbol in runner.portfolio.positions or runner.risk.stops.is_blocked(symbol):
                    found[id(runner)] = runner
        return list(found.values())

    def _rebuild(self, runners: list[ExecutionRunner]) -> None:
        by_symbol: dict[str, list[ExecutionRunner]] = {}
        for runner in runners:
            for symbol in {*runner.info.symbols, *runner.portfolio.positions}:
                by_symbol.setdefault(symbol, []).append(runner)
        self._runners = runners
        self._by_symbol = by_symbol


def may_act(runner: ExecutionRunner, prices: Mapping[str, Decimal], now: float) -> bool:
    """Whether the monitor step at `prices` could do more than move marks: False only when
    no symbol of the batch reaches or leaves its stop-loss warning zone or is blocked (may
    re-arm), the equity stays above the day's loss floor, and no day roll is due. About 10x
    cheaper than the step; a runner left out gets its marks from the next monitor cycle."""
    valuation = runner.last_valuation
    risk = runner.risk
    if valuation is None or now >= risk.next_day_ts:
        return True
    stops = risk.stops
    pct = stops.stop_loss_pct
    positions = runner.portfolio.positions
    equity_change = ZERO
    for symbol, mark in prices.items():
        if stops.is_blocked(symbol):
            return True
        pos = positions.get(symbol)
        if pos is None:
            continue
        valued = valuation.positions.get(symbol)
        if mark <= 0 or valued is None or valued.quantity != pos.quantity:
            return True  # not what the last valuation saw: let the full step decide
        if pct is not None:
            # The warning zone's top, as `StopLossMonitor.scan` computes it; the previous
            # mark counts too, since leaving the zone also changes the monitor's state.
            top = quantize_price(stop_level(pos, pct) * (_ONE + stops.buffer))
            if mark <= top or valued.mark <= top:
                return True
        equity_change += pos.quantity * (mark - valued.mark)
    if risk.halted:
        return False  # halted already: a lower equity changes nothing more today
    return valuation.equity + equity_change <= risk.loss_floor + _CENT


def _own(runner: ExecutionRunner, prices: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """The marks of the runner's own symbols (its remembered marks stay its own)."""
    targets = runner.info.targets
    positions = runner.portfolio.positions
    return {s: p for s, p in prices.items() if s in targets or s in positions}


async def _close(updates: AsyncIterator[Mapping[str, Decimal]]) -> None:
    """Close a feed's iterator (an async generator's `finally` releases its connection)."""
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
