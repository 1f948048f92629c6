"""React to the price, not the clock: each batch of announced prices goes straight to the
monitor step of the executions it can affect (`Monitor.on_prices`), so a stop-loss or the
daily loss limit acts within milliseconds of the price that crossed it instead of at the
next monitor cycle, which stays the safety net for whatever the feed misses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal

from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.ports import PriceFeed

_log = get_logger(__name__)

_RESTART_S = 1.0  # before resubscribing when a feed ended or failed


async def watch_prices(
    feed: PriceFeed, on_prices: Callable[[Mapping[str, Decimal]], Awaitable[object]]
) -> None:
    """Until cancelled. A retryable failure skips a batch (the monitor cycle covers it);
    any other error propagates and stops the worker, like every background loop."""
    while True:
        updates = feed.updates()
        try:
            async for prices in updates:
                try:
                    await on_prices(prices)
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


async def _close(updates: AsyncIterator[Mapping[str, Decimal]]) -> None:
    """Close a feed's iterator (an async generator's `finally` releases its connection)."""
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
