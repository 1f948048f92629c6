"""The worker's garbage-collection policy (runtime/gc_tuning.py)."""

from __future__ import annotations

import asyncio
import gc

from strategy_worker.runtime.gc_tuning import THRESHOLDS, GcPolicy


def test_survivors_of_a_full_collection_are_frozen_and_uninstall_restores_the_defaults() -> None:
    defaults = gc.get_threshold()

    async def scenario() -> tuple[tuple[int, ...], int, int, int]:
        policy = GcPolicy.install()
        try:
            during = gc.get_threshold()
            kept = [[object()] for _ in range(1000)]  # allocated after the install
            gc.collect()  # a full collection: its survivors are frozen on the next tick
            await asyncio.sleep(0)
            frozen = gc.get_freeze_count()
            policy.thaw()  # everything collected once, then frozen again
            again = gc.get_freeze_count()
            del kept
            return during, frozen, again, policy.frozen_after
        finally:
            policy.uninstall()

    during, frozen, again, full = asyncio.run(scenario())

    assert during == THRESHOLDS
    assert frozen >= 1000
    assert again > 0
    assert full >= 1
    assert gc.get_threshold() == defaults
    assert gc.get_freeze_count() == 0
