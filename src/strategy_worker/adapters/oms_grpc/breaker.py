"""A circuit breaker for calls to the OMS: fail fast while it is down, probe before trusting it.

closed --(failure_threshold consecutive failures)--> open --(reset_timeout_s)--> half-open;
in half-open exactly one probe call goes through: success closes, failure re-opens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from strategy_worker.errors import CircuitOpenError


class BreakerState(IntEnum):
    """Numeric values are what the `oms_client_breaker_state` gauge exports."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures of calls; `before_call()` raises while the circuit is open.

    Not thread-safe; meant for one asyncio event loop (no await inside, so no interleaving).
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        name: str = "oms",
        monotonic: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_s < 0:
            raise ValueError("reset_timeout_s must not be negative")
        self._threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._name = name
        self._monotonic = monotonic
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Admit a call or raise CircuitOpenError; in half-open, admits a single probe."""
        if self._state is BreakerState.CLOSED:
            return
        if self._state is BreakerState.OPEN:
            waited = self._monotonic() - self._opened_at
            if waited < self._reset_timeout_s:
                raise CircuitOpenError(
                    f"{self._name} circuit open after {self._failures} consecutive failures; "
                    f"next probe in {self._reset_timeout_s - waited:.2f}s"
                )
            self._set_state(BreakerState.HALF_OPEN)
        if self._probe_in_flight:
            raise CircuitOpenError(f"{self._name} circuit half-open: a probe is already in flight")
        self._probe_in_flight = True

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set_state(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if was_probe or (self._state is BreakerState.CLOSED and self._failures >= self._threshold):
            self._opened_at = self._monotonic()
            self._set_state(BreakerState.OPEN)

    def release(self) -> None:
        """Forget an admitted call that ended without telling success from failure."""
        self._probe_in_flight = False

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        if self._on_state_change is not None:
            self._on_state_change(state)
