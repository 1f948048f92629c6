"""The accelerated clock of paper runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from strategy_worker.runtime.clocks import AcceleratedClock

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


async def test_accelerated_clock_when_real_time_passes_then_simulated_time_runs_faster() -> None:
    clock = AcceleratedClock(start=START, speed=3600)
    await asyncio.sleep(0.05)
    elapsed = (clock.now() - START).total_seconds()
    assert 150 <= elapsed <= 3600  # 0.05 s real is 180 s simulated (plus scheduling slack)


async def test_accelerated_clock_when_sleeping_simulated_seconds_then_real_sleep_is_shorter() -> (
    None
):
    clock = AcceleratedClock(start=START, speed=1000)
    loop = asyncio.get_running_loop()
    before = loop.time()
    await clock.sleep(50)  # 50 simulated seconds
    assert loop.time() - before < 1.0


def test_accelerated_clock_when_restarted_then_time_starts_again_at_start() -> None:
    clock = AcceleratedClock(start=START, speed=1_000_000)
    clock.restart()
    assert (clock.now() - START).total_seconds() < 1_000


@pytest.mark.parametrize("speed", [0, -1])
def test_accelerated_clock_when_speed_not_positive_then_value_error(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        AcceleratedClock(start=START, speed=speed)


def test_accelerated_clock_when_naive_start_then_value_error() -> None:
    with pytest.raises(ValueError, match="timezone"):
        AcceleratedClock(start=datetime(2024, 1, 2), speed=1)  # noqa: DTZ001
