"""`BarGate`: which incoming closed bars are used, per (symbol, timeframe), and why not.

Indicators are incremental: a bar, once used, cannot be taken back honestly. So every
stream (symbol, timeframe) moves strictly forward, and anything else is ignored with a
reason, counted, and never raises:

- `duplicate`: a bar identical to one already accepted (a redelivery);
- `superseded`: replaced by a later version of the same start in the same batch (a
  correction that arrived before the bar was used: the later version is used);
- `correction_after_use`: the start of an accepted bar with other numbers; the accepted bar
  was already used by indicators and stays, the correction is ignored;
- `late`: a start older than the stream's last accepted bar (out of order), not a duplicate;
- `not_closed`: a bar whose end is after `now` + `max_clock_skew` (still forming: using it
  would be look-ahead).

Within one batch, bars are put in time order first (ascending start per stream), so a
batch that arrives shuffled loses nothing. Malformed bars never get here: the parsers reject
them with a code and a field (`messages/bars.py`, `validate_bar`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.timeframes import Timeframe

DEFAULT_MAX_CLOCK_SKEW = timedelta(seconds=5)
_REMEMBERED = 64  # accepted bars kept per stream to tell a late duplicate from a late bar


class IgnoreReason(StrEnum):
    """Why a well-formed bar was not used (also a metric label)."""

    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    CORRECTION_AFTER_USE = "correction_after_use"
    LATE = "late"
    NOT_CLOSED = "not_closed"


@dataclass(frozen=True, slots=True)
class IgnoredBar:
    bar: Bar
    reason: IgnoreReason


@dataclass(frozen=True, slots=True)
class GateResult:
    """What one `accept` call decided."""

    accepted: tuple[Bar, ...]
    """The bars to use, earliest end first (then symbol, timeframe)."""
    ignored: tuple[IgnoredBar, ...]


class BarGate:
    """The acceptance policy for the bars of every stream a worker receives."""

    def __init__(self, *, max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW) -> None:
        if max_clock_skew < timedelta(0):
            raise ValueError("max_clock_skew must not be negative")
        self._skew = max_clock_skew
        self._recent: dict[tuple[str, Timeframe], deque[Bar]] = {}
        self.counts: Counter[IgnoreReason] = Counter()
        self.accepted_total = 0

    def last_start(self, symbol: str, timeframe: Timeframe) -> datetime | None:
        """Start of the last bar accepted on the stream, or None."""
        recent = self._recent.get((symbol, timeframe))
        return recent[-1].start if recent else None

    def seed(self, bars: Iterable[Bar]) -> None:
        """Remember bars already used before this gate existed (the stored history loaded
        for warm-up), so their redelivery counts as a duplicate; nothing is returned."""
        for bar in sorted(bars, key=lambda b: b.start):
            recent = self._recent.setdefault(bar.key, deque(maxlen=_REMEMBERED))
            if not recent or bar.start > recent[-1].start:
                recent.append(bar)

    def accept(self, bars: Sequence[Bar], *, now: datetime) -> GateResult:
        """Sort out one batch (in arrival order); `now` is the time the batch is handled."""
        ignored: list[IgnoredBar] = []
        latest: dict[tuple[str, Timeframe, datetime], Bar] = {}
        horizon = now + self._skew
        for bar in bars:
            if bar.end > horizon:
                ignored.append(IgnoredBar(bar, IgnoreReason.NOT_CLOSED))
                continue
            slot = (bar.symbol, bar.timeframe, bar.start)
            earlier = latest.get(slot)
            if earlier is not None:
                reason = (
                    IgnoreReason.DUPLICATE if earlier.same_content(bar) else IgnoreReason.SUPERSEDED
                )
                ignored.append(IgnoredBar(earlier, reason))
            latest[slot] = bar
        accepted: list[Bar] = []
        for bar in sorted(latest.values(), key=lambda b: (b.start, b.symbol, b.timeframe)):
            verdict = self._judge(bar)
            if verdict is None:
                accepted.append(bar)
            else:
                ignored.append(IgnoredBar(bar, verdict))
        for item in ignored:
            self.counts[item.reason] += 1
        self.accepted_total += len(accepted)
        accepted.sort(key=lambda b: (b.end, b.symbol, b.timeframe))
        return GateResult(tuple(accepted), tuple(ignored))

    def _judge(self, bar: Bar) -> IgnoreReason | None:
        recent = self._recent.setdefault(bar.key, deque(maxlen=_REMEMBERED))
        if not recent or bar.start > recent[-1].start:
            recent.append(bar)
            return None
        for known in reversed(recent):
            if known.start == bar.start:
                if known.same_content(bar):
                    return IgnoreReason.DUPLICATE
                return IgnoreReason.CORRECTION_AFTER_USE
            if known.start < bar.start:
                break
        return IgnoreReason.LATE
