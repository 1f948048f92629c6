"""Bar timeframes (`1m`, `5m`, `15m`, `1h`, `4h`, `1d`, `1w`, ...) and the alignment of bar starts.

A timeframe is written `<n><unit>`: minutes `m` (n divides 60: 1, 2, 3, 4, 5, 6, 10, 12, 15,
20, 30), hours `h` (n divides 24: 1, 2, 3, 4, 6, 8, 12), one day `1d`, one week `1w`. Only
these spellings are accepted (`60m` is refused: it is `1h`), so one timeframe has one name.

Bars are aligned in UTC: a bar of timeframe T starts at a multiple of T since 1970-01-01
00:00 UTC (minutes, hours, days); weeks start on Monday 00:00 UTC. So a `1d` bar is the UTC
calendar day, and `4h` bars start at 00:00, 04:00, ... 20:00 UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

_PATTERN: Final = re.compile(r"([1-9][0-9]{0,2})([mhdw])")
_ALLOWED: Final = {
    "m": frozenset({1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30}),
    "h": frozenset({1, 2, 3, 4, 6, 8, 12}),
    "d": frozenset({1}),
    "w": frozenset({1}),
}
_UNIT_SECONDS: Final = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# 1970-01-01 was a Thursday: weeks are counted from Monday 1970-01-05.
_WEEK_EPOCH: Final = datetime(1970, 1, 5, tzinfo=UTC)

#: The message every refused spelling gets (rules, bar messages, the CLI).
TIMEFRAME_HINT: Final = (
    "must be one of 1m 2m 3m 4m 5m 6m 10m 12m 15m 20m 30m, 1h 2h 3h 4h 6h 8h 12h, 1d, 1w"
)


@dataclass(frozen=True, slots=True, order=True)
class Timeframe:
    """A bar length; ordered by duration, named by its canonical text (`str(tf)`)."""

    seconds: int
    text: str = field(compare=False)

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def floor(self, moment: datetime) -> datetime:
        """The start of the bar that contains `moment` (aware; the result is UTC)."""
        if moment.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        epoch = _WEEK_EPOCH if self.text == "1w" else _EPOCH
        elapsed = moment.astimezone(UTC) - epoch
        whole = (elapsed // timedelta(seconds=self.seconds)) * self.seconds
        return epoch + timedelta(seconds=whole)

    def is_aligned(self, start: datetime) -> bool:
        """True when `start` is exactly a bar start of this timeframe."""
        return start.tzinfo is not None and self.floor(start) == start

    def end(self, start: datetime) -> datetime:
        """When the bar starting at `start` closes (exclusive end)."""
        return start + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return self.text


def parse_timeframe(text: object) -> Timeframe | None:
    """The timeframe named by `text`, or None when it is not one of the accepted spellings."""
    if not isinstance(text, str):
        return None
    match = _PATTERN.fullmatch(text)
    if match is None:
        return None
    count, unit = int(match[1]), match[2]
    if count not in _ALLOWED[unit]:
        return None
    return Timeframe(count * _UNIT_SECONDS[unit], text)


def timeframe(text: str) -> Timeframe:
    """`parse_timeframe` for trusted text (code, tests, stored rows); ValueError otherwise."""
    parsed = parse_timeframe(text)
    if parsed is None:
        raise ValueError(f"timeframe {text!r} {TIMEFRAME_HINT}")
    return parsed
