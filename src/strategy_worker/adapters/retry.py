"""One retry policy for the whole project: capped exponential backoff with full jitter.

Full jitter (a uniform delay between 0 and the capped exponential ceiling) spreads the
retries of many clients hit by the same outage, so they do not come back in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delay before retry number `attempt` (1 = first retry): uniform in [0, ceiling]."""

    base_s: float
    """Ceiling of the first retry's delay; doubles with each further retry."""
    max_s: float
    """Cap on the ceiling, however many retries came before."""

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("backoff delays must not be negative")
        if self.max_s < self.base_s:
            raise ValueError("max_s must be at least base_s")

    @classmethod
    def from_ms(cls, backoff_ms: int, max_backoff_ms: int) -> Backoff:
        return cls(base_s=backoff_ms / 1000, max_s=max_backoff_ms / 1000)

    def ceiling(self, attempt: int) -> float:
        """The largest delay retry `attempt` may wait: min(max_s, base_s * 2**(attempt-1))."""
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        # Compare exponents before multiplying so a huge attempt number cannot overflow.
        if attempt > 64:
            return self.max_s
        return min(self.max_s, self.base_s * float(1 << (attempt - 1)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A fully jittered delay for retry `attempt`."""
        ceiling = self.ceiling(attempt)
        return (rng or _RNG).uniform(0.0, ceiling)


_RNG = random.Random()
"""The jitter of every `Backoff` given no generator of its own (never anything else)."""


def seed_jitter(seed: int) -> None:
    """Make the default jitter reproducible: the deterministic simulation seeds it, so the
    same seed replays the same retry delays (in production it stays seeded from the OS)."""
    _RNG.seed(seed)


RetryHook = Callable[[int, BaseException, float], None]
"""Called before each retry with (retry number, the error, the delay in seconds)."""


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    max_attempts: int,
    backoff: Backoff,
    is_retryable: Callable[[BaseException], bool],
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run `call` up to `max_attempts` times, sleeping a jittered backoff between tries.

    Only errors for which `is_retryable` is true are retried; any other error, and the
    last retryable one, propagates unchanged. `call` must be safe to repeat (idempotent).
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as exc:
            if attempt >= max_attempts or not is_retryable(exc):
                raise
            delay = backoff.delay(attempt, rng)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await sleep(delay)
            attempt += 1
