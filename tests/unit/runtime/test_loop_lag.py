"""The event-loop lag sampler (runtime/loop_lag.py)."""

from __future__ import annotations

import asyncio
import time

from strategy_worker.runtime.loop_lag import watch_loop_lag


def test_a_blocked_loop_shows_as_a_lag_sample_as_long_as_the_block() -> None:
    async def scenario() -> list[float]:
        samples: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(samples.append, interval=0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - synchronous work holds the loop (the point)
        await asyncio.sleep(0.05)
        watcher.cancel()
        return samples

    samples = asyncio.run(scenario())

    assert max(samples) >= 0.15
    assert sorted(samples)[len(samples) // 2] < 0.05  # the other samples stay small
