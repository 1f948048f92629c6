"""Fault switches: stalls hold a bounded number of calls, for a time or until cleared."""

from __future__ import annotations

import asyncio

from strategy_worker.oms_sim.faults import FaultSwitches


async def test_stall_holds_only_the_given_number_of_calls() -> None:
    faults = FaultSwitches()
    faults.stall(seconds=None, calls=1)

    held = asyncio.create_task(faults.hold(after_processing=False))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(faults.hold(after_processing=False), 0.5)  # budget used up

    assert not held.done()
    faults.clear_stall()
    await asyncio.wait_for(held, 0.5)


async def test_stall_for_seconds_releases_by_itself() -> None:
    faults = FaultSwitches()
    faults.stall(seconds=0.02)

    await asyncio.wait_for(faults.hold(after_processing=False), 0.5)


async def test_stall_applies_only_to_its_phase_of_the_call() -> None:
    faults = FaultSwitches()
    faults.stall(seconds=None, after_processing=True)

    await asyncio.wait_for(faults.hold(after_processing=False), 0.5)
    held = asyncio.create_task(faults.hold(after_processing=True))
    await asyncio.sleep(0.01)
    assert not held.done()
    faults.clear_stall()
    await asyncio.wait_for(held, 0.5)


def test_drop_streams_wakes_every_listener_once() -> None:
    faults = FaultSwitches()
    first, second = faults.listen_for_drops(), faults.listen_for_drops()
    faults.forget(second)

    faults.drop_streams()

    assert first.is_set()
    assert not second.is_set()
    assert faults.drop_generation == 1
