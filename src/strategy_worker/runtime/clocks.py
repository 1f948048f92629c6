"""Clocks for the runtime: the wall clock in production, an accelerated one for paper runs.

The pure engines only ever see a `Clock` (`now()`); the runtime also needs to sleep in the
same time frame, so these clocks expose `sleep(seconds)` in simulated seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    """Wall-clock time in UTC; sleeping takes real seconds."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        """Epoch seconds without building a datetime (the risk checks' hot path)."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @property
    def speed(self) -> float:
        return 1.0


class AcceleratedClock:
    """Simulated time that runs `speed` times faster than the wall clock from `start`.

    Five simulated hours in one real minute is speed=300. Monotonic underneath, so a
    wall-clock adjustment never makes simulated time jump backwards.
    """

    def __init__(self, *, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._start = start
        self._speed = speed
        self._origin = time.monotonic()

    def restart(self) -> None:
        """Start simulated time again at `start` (e.g. once a slow startup is over)."""
        self._origin = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._origin) * self._speed
        return self._start + timedelta(seconds=elapsed)

    def timestamp(self) -> float:
        return self.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds / self._speed))

    @property
    def speed(self) -> float:
        return self._speed
