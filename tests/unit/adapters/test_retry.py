"""The project-wide retry policy: capped exponential backoff, full jitter, retryable only."""

from __future__ import annotations

import random

import pytest

from strategy_worker.adapters.retry import Backoff, retry_async


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def test_backoff_ceiling_doubles_then_caps() -> None:
    backoff = Backoff(base_s=1.0, max_s=5.0)

    assert [backoff.ceiling(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.ceiling(10_000) == 5.0


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    backoff = Backoff.from_ms(100, 400)
    rng = random.Random(1)

    delays = [backoff.delay(3, rng) for _ in range(500)]

    assert all(0.0 <= d <= 0.4 for d in delays)
    assert max(delays) > 0.3
    assert min(delays) < 0.1


def test_backoff_refuses_a_cap_below_the_base() -> None:
    with pytest.raises(ValueError, match="max_s"):
        Backoff(base_s=2.0, max_s=1.0)


async def test_retries_a_retryable_error_until_success_with_backoff_between() -> None:
    slept: list[float] = []
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Flaky
        return "ok"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await retry_async(
        call,
        max_attempts=3,
        backoff=Backoff(base_s=1.0, max_s=10.0),
        is_retryable=lambda e: isinstance(e, Flaky),
        sleep=sleep,
        rng=random.Random(0),
    )

    assert result == "ok"
    assert calls == 3
    assert len(slept) == 2
    assert 0 <= slept[0] <= 1.0
    assert 0 <= slept[1] <= 2.0


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    calls = 0
    retries: list[int] = []

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Flaky(calls)

    async def sleep(_: float) -> None:
        return None

    with pytest.raises(Flaky) as info:
        await retry_async(
            call,
            max_attempts=3,
            backoff=Backoff(base_s=0.0, max_s=0.0),
            is_retryable=lambda e: isinstance(e, Flaky),
            on_retry=lambda n, _e, _d: retries.append(n),
            sleep=sleep,
        )

    assert info.value.args == (3,)
    assert retries == [1, 2]


async def test_never_retries_a_non_retryable_error() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Fatal

    with pytest.raises(Fatal):
        await retry_async(
            call,
            max_attempts=5,
            backoff=Backoff(base_s=0.0, max_s=0.0),
            is_retryable=lambda e: isinstance(e, Flaky),
        )
    assert calls == 1
