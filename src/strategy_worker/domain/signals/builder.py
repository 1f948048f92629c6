"""`BarBuilder`: price ticks (timestamp, price) -> closed bars of every requested timeframe.

Pure and deterministic: the same ticks and the same `advance(now)` calls give the same bars,
whether the ticks come from Redis price announcements (live) or from a `timestamp,symbol,price`
file (paper mode, `strategy-worker bars import`).

- A tick at `t` belongs to the bar `[floor(t), floor(t) + timeframe)` of each timeframe.
- A bar closes when a tick at or after its end arrives for that symbol, or when
  `advance(now)` is called with `now` at or after its end: a quiet symbol's bar still closes
  on time. The closed bar is returned once and forgotten.
- OHLC come from the ticks: open = first, high = max, low = min, close = last. Price
  announcements carry no traded quantity, so `volume` is 0.
- No tick in a whole interval: no bar for it (no synthetic flat bars; indicators see the gap
  as the next bar, as they would with an exchange's own bars, which skip non-trading days).
- A tick older than the symbol's open bar, or than a bar already closed, is *late*: ignored
  and counted (`late_ticks`); a non-positive price or a naive timestamp is *invalid*: ignored
  and counted (`invalid_ticks`). Nothing here raises on input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from strategy_worker.domain.signals.bars import ZERO, Bar
from strategy_worker.domain.signals.timeframes import Timeframe


@dataclass(slots=True)
class _Forming:
    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal

    def add(self, price: Decimal) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price


class BarBuilder:
    """Builds bars of each timeframe in `timeframes` for every symbol it is given ticks of."""

    def __init__(self, timeframes: Iterable[Timeframe]) -> None:
        self._timeframes: list[Timeframe] = sorted(set(timeframes))
        self._forming: dict[tuple[str, Timeframe], _Forming] = {}
        # End of the last bar closed per stream: a tick before it is late.
        self._closed_until: dict[tuple[str, Timeframe], datetime] = {}
        self.late_ticks = 0
        self.invalid_ticks = 0

    @property
    def timeframes(self) -> tuple[Timeframe, ...]:
        return tuple(self._timeframes)

    def add_timeframe(self, timeframe: Timeframe) -> None:
        """Also build `timeframe` from now on (its first bar starts with the next tick)."""
        if timeframe not in self._timeframes:
            self._timeframes.append(timeframe)
            self._timeframes.sort()

    def on_tick(self, symbol: str, price: Decimal, at: datetime) -> list[Bar]:
        """Feed one price; returns the bars this tick closed (earliest end first)."""
        if at.tzinfo is None or not price.is_finite() or price <= ZERO:
            self.invalid_ticks += 1
            return []
        closed: list[Bar] = []
        late = False
        for tf in self._timeframes:
            key = (symbol, tf)
            bar = self._forming.get(key)
            if bar is not None and at >= bar.end:
                closed.append(self._close(symbol, tf, bar))
                bar = None
            if bar is None:
                if at < self._closed_until.get(key, at):
                    late = True
                    continue
                start = tf.floor(at)
                self._forming[key] = _Forming(start, tf.end(start), price, price, price, price)
            elif at < bar.start:
                late = True
            else:
                bar.add(price)
        if late:
            self.late_ticks += 1
        closed.sort(key=_order)
        return closed

    def on_prices(self, prices: Mapping[str, Decimal], at: datetime) -> list[Bar]:
        """One announcement batch (symbol -> price, as `PriceFeed.updates()` yields it)
        observed at `at`: every tick, then the clock; returns all bars that closed."""
        closed: list[Bar] = []
        for symbol in sorted(prices):
            closed.extend(self.on_tick(symbol, prices[symbol], at))
        closed.extend(self.advance(at))
        closed.sort(key=_order)
        return closed

    def advance(self, now: datetime) -> list[Bar]:
        """Close every forming bar whose end is at or before `now` (earliest end first)."""
        due = [(key, bar) for key, bar in self._forming.items() if bar.end <= now]
        closed = [self._close(symbol, tf, bar) for (symbol, tf), bar in due]
        closed.sort(key=_order)
        return closed

    def forming(self, symbol: str, timeframe: Timeframe) -> Bar | None:
        """The bar still open for (symbol, timeframe), for display only: never feed it to
        an indicator (it has not closed)."""
        bar = self._forming.get((symbol, timeframe))
        return None if bar is None else _as_bar(symbol, timeframe, bar)

    def _close(self, symbol: str, tf: Timeframe, bar: _Forming) -> Bar:
        del self._forming[(symbol, tf)]
        self._closed_until[(symbol, tf)] = bar.end
        return _as_bar(symbol, tf, bar)


def _as_bar(symbol: str, tf: Timeframe, bar: _Forming) -> Bar:
    return Bar(
        symbol=symbol,
        timeframe=tf,
        start=bar.start,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=ZERO,
    )


def _order(bar: Bar) -> tuple[datetime, str, Timeframe]:
    return bar.end, bar.symbol, bar.timeframe
