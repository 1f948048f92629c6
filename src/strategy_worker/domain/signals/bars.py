"""The `Bar` value: one symbol's open, high, low, close and volume over one timeframe.

Prices and volume are exact `Decimal`s (money never passes through a float); `start` is an
aware UTC datetime aligned to the timeframe (`timeframes.py`), and the bar covers
[start, start + timeframe). A bar is *closed* once a clock or a tick at or after its `end`
has been observed; only closed bars feed indicators (no look-ahead).

`validate_bar` is the one definition of a well-formed bar, used by the bar message parser,
the CSV readers and the bar builder's tests: it returns a `Rejection` with a stable code and
the field name, never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.timeframes import Timeframe
from strategy_worker.domain.strategy import SYMBOL_RE

ZERO: Final = Decimal(0)
#: Prices above this are refused as malformed (a fat-fingered feed, not a real quote).
MAX_PRICE: Final = Decimal("1e9")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One closed (or forming) bar; construct through `make_bar` for untrusted input."""

    symbol: str
    timeframe: Timeframe
    start: datetime
    """Aware UTC, aligned to `timeframe`."""
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    """Traded quantity in the bar; 0 for bars built from price announcements (no volume)."""

    @property
    def end(self) -> datetime:
        """The first instant after the bar: it is closed once this time has been seen."""
        return self.timeframe.end(self.start)

    @property
    def key(self) -> tuple[str, Timeframe]:
        """The stream this bar belongs to: (symbol, timeframe)."""
        return self.symbol, self.timeframe

    def same_content(self, other: Bar) -> bool:
        """True when both carry the same numbers (Decimal equality: 1.50 == 1.5)."""
        return (
            self.open == other.open
            and self.high == other.high
            and self.low == other.low
            and self.close == other.close
            and self.volume == other.volume
        )


def validate_bar(bar: Bar) -> Rejection | None:
    """None for a well-formed bar, else why not (code and field).

    Codes: `invalid_symbol`, `invalid_timestamp` (naive start), `misaligned_start` (not a
    bar start of its timeframe), `invalid_price` (not in (0, 1e9] or not finite),
    `inconsistent_ohlc` (high below open/close/low, or low above open/close), and
    `invalid_volume` (negative or not finite).
    """
    if SYMBOL_RE.fullmatch(bar.symbol) is None:
        return Rejection("invalid_symbol", "symbol", f"{bar.symbol[:20]!r} is not a symbol")
    if bar.start.tzinfo is None or bar.start.utcoffset() != UTC.utcoffset(None):
        return Rejection("invalid_timestamp", "start", "must be a UTC timestamp")
    if not bar.timeframe.is_aligned(bar.start):
        return Rejection(
            "misaligned_start", "start", f"is not a start of a {bar.timeframe} bar (UTC)"
        )
    for name in ("open", "high", "low", "close"):
        price: Decimal = getattr(bar, name)
        if not price.is_finite() or not ZERO < price <= MAX_PRICE:
            return Rejection("invalid_price", name, f"must be a price in (0, {MAX_PRICE}]")
    if bar.high < max(bar.open, bar.close, bar.low):
        return Rejection("inconsistent_ohlc", "high", "must be >= open, close and low")
    if bar.low > min(bar.open, bar.close):
        return Rejection("inconsistent_ohlc", "low", "must be <= open and close")
    if not bar.volume.is_finite() or bar.volume < ZERO:
        return Rejection("invalid_volume", "volume", "must be a number >= 0")
    return None


def make_bar(
    *,
    symbol: str,
    timeframe: Timeframe,
    start: datetime,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal = ZERO,
) -> Bar | Rejection:
    """A validated bar (start converted to UTC first), or the rejection."""
    if start.tzinfo is None:
        return Rejection("invalid_timestamp", "start", "must carry a timezone (e.g. Z)")
    bar = Bar(
        symbol=symbol,
        timeframe=timeframe,
        start=start.astimezone(UTC),
        open=open,
        high=high,
        low=low,
        close=close,
        volume=volume,
    )
    problem = validate_bar(bar)
    return bar if problem is None else problem
