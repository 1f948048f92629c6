"""Circuit breaker: closed -> open after N failures -> half-open after cooldown -> one probe."""

from __future__ import annotations

import pytest

from strategy_worker.adapters.oms_grpc.breaker import BreakerState, CircuitBreaker
from strategy_worker.errors import CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def breaker(clock: Clock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3,
        reset_timeout_s=10.0,
        monotonic=clock,
        on_state_change=None if changes is None else changes.append,
    )


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        b.before_call()
        b.record_failure()


def test_opens_after_threshold_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED

    fail(b, 1)

    assert b.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match="circuit open"):
        b.before_call()


def test_a_success_resets_the_consecutive_failure_count() -> None:
    b = breaker(Clock())
    fail(b, 2)
    b.before_call()
    b.record_success()

    fail(b, 2)

    assert b.state is BreakerState.CLOSED


def test_after_cooldown_one_probe_goes_through_and_success_closes() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    b = breaker(clock, changes)
    fail(b, 3)
    clock.t += 10.0

    b.before_call()
    with pytest.raises(CircuitOpenError, match="probe"):
        b.before_call()
    b.record_success()

    assert b.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.t += 10.0
    b.before_call()

    b.record_failure()

    assert b.state is BreakerState.OPEN
    clock.t += 9.0
    with pytest.raises(CircuitOpenError):
        b.before_call()
    clock.t += 1.0
    b.before_call()
    assert b.state is BreakerState.HALF_OPEN


def test_a_released_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.t += 10.0
    b.before_call()

    b.release()

    b.before_call()
    assert b.state is BreakerState.HALF_OPEN
