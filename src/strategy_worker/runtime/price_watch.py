"""React to the price, not the clock: a stop-loss or the daily loss limit acts within
milliseconds of the price that crossed it instead of at the next monitor cycle.

For each batch of `PriceFeed.updates()`, only the running executions that hold one of its
symbols (or are blocked on one by a past stop-out, so it can re-arm) are checked, with the
monitor's own step: `ExecutionRunner.monitor` under the runner's lock, stop-loss intents
recorded before they are sent, events published once durable, one failing execution never
disturbing another (`Worker.guard`). The stop-loss hysteresis and the sells already in flight
keep a stop from being sent twice, whether the watch or the monitor saw the price first.
No snapshot here: snapshots stay on the cadence, and the periodic monitor remains the safety
net for whatever the feed misses.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

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
        """Check the executions `prices` concern; returns how many were checked."""
        worker = self._worker
        runners = self._index.affected(worker.runners, prices)
        if not runners:
            return 0
        # A held symbol the runner has no mark for yet (resumed, not monitored since) is
        # read now, so its equity is never valued at a stale fill price.
        missing = {
            s
            for r in runners
            for s in r.portfolio.positions
            if s not in prices and s not in r.last_prices
        }
        marks = prices
        if missing:
            marks = {**(await worker.prices.get_prices(sorted(missing))), **prices}
        for count, runner in enumerate(runners, start=1):
            if worker.runners.get(runner.execution_id) is runner:
                await worker.guard(runner, self._check(runner, _own(runner, marks)))
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # thousands of executions on one symbol: let others run
        return len(runners)

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


def _own(runner: ExecutionRunner, prices: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """The marks of the runner's own symbols (its remembered marks stay its own)."""
    own = {s: prices[s] for s in runner.info.symbols if s in prices}
    for symbol in runner.portfolio.positions:
        if symbol in prices:
            own[symbol] = prices[symbol]
    return own


async def _close(updates: AsyncIterator[Mapping[str, Decimal]]) -> None:
    """Close a feed's iterator (an async generator's `finally` releases its connection)."""
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
