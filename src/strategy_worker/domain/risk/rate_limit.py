"""Token bucket on an injected time axis (float seconds): no wall-clock reads."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second up to `burst`; one token per order submission."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            tokens = self.tokens + (now - self.last) * self.rate
            self.tokens = tokens if tokens < self.burst else self.burst
            self.last = now

    def take(self) -> None:
        """Consume one token; a forced (risk-reducing) take may borrow down to -burst."""
        tokens = self.tokens - 1.0
        self.tokens = tokens if tokens > -self.burst else -self.burst
