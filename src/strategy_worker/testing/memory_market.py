"""`BarStore` in memory: `market_bars` and the pruning of decisions, for tests and the
simulation (the same semantics as `adapters/postgres/market_data.MarketDataStore`).

Bars are kept per stream in start order; the first version of a bar stays unless
`replace` (as in PostgreSQL). Decisions live with the commits (`MemoryDatabase.decisions`);
`prune` deletes them there when the store was given the database. `down_until` makes every
call fail with a retryable `StoreError` (an outage), like the memory store's faults.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.timeframes import Timeframe
from strategy_worker.errors import StoreError
from strategy_worker.testing.memory_store import MemoryDatabase

_Key = tuple[str, Timeframe]


@dataclass(frozen=True, slots=True)
class MemoryPruned:
    decisions: int
    bars: int


class MemoryMarketData:
    """Stored bars in memory (implements `ports.BarStore`)."""

    def __init__(
        self,
        db: MemoryDatabase | None = None,
        *,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.db = db
        self._now = now
        self.down_until = float("-inf")
        self.streams: dict[_Key, list[Bar]] = {}
        self.sources: dict[tuple[str, Timeframe, datetime], tuple[str, datetime]] = {}
        self.writes = 0

    def _check(self) -> None:
        if self._now is not None and self._now() < self.down_until:
            raise StoreError("market data unavailable (simulated outage)", retryable=True)

    def bars(self, symbol: str, tf: Timeframe) -> list[Bar]:
        """Every stored bar of one stream, oldest first (tests)."""
        return list(self.streams.get((symbol, tf), ()))

    async def upsert_bars(
        self, bars: Sequence[Bar], *, source: str, received_at: datetime, replace: bool = False
    ) -> int:
        self._check()
        written = 0
        for bar in bars:
            series = self.streams.setdefault(bar.key, [])
            starts = [b.start for b in series]
            at = bisect.bisect_left(starts, bar.start)
            if at < len(series) and series[at].start == bar.start:
                if not replace or series[at].same_content(bar):
                    continue
                series[at] = bar
            else:
                series.insert(at, bar)
            self.sources[(bar.symbol, bar.timeframe, bar.start)] = (source, received_at)
            written += 1
        self.writes += 1
        return written

    async def load_warmup(
        self, streams: Iterable[tuple[str, Timeframe]], *, bars: int, before: datetime
    ) -> dict[tuple[str, Timeframe], list[Bar]]:
        self._check()
        found: dict[_Key, list[Bar]] = {}
        for key in streams:
            series = [b for b in self.streams.get(key, ()) if b.start < before]
            found[key] = series[-bars:] if bars > 0 else []
        return found

    async def load_range(
        self, symbols: Sequence[str], tf: Timeframe, *, since: datetime, until: datetime
    ) -> list[Bar]:
        self._check()
        rows = [
            b
            for symbol in symbols
            for b in self.streams.get((symbol, tf), ())
            if since <= b.start < until
        ]
        return sorted(rows, key=lambda b: (b.start, b.symbol))

    async def prune(
        self, *, decisions_before: datetime, bars_before: datetime | None = None, batch: int = 0
    ) -> MemoryPruned:
        self._check()
        decisions = 0
        if self.db is not None:
            old = [k for k, d in self.db.decisions.items() if d.decided_at < decisions_before]
            for slot in old:
                del self.db.decisions[slot]
            decisions = len(old)
        bars = 0
        if bars_before is not None:
            for stream, series in self.streams.items():
                kept = [b for b in series if b.start >= bars_before]
                bars += len(series) - len(kept)
                self.streams[stream] = kept
        return MemoryPruned(decisions, bars)
