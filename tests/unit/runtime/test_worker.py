"""Worker.monitor_cycle: quiet executions' states are written in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from strategy_worker.store import StateWrite

from .test_price_watch import Rig


class CountingRig(Rig):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        batch_write = self.store.update_execution_states

        async def counted(writes: Sequence[StateWrite]) -> set[object]:
            self.batches.append(len(writes))
            return set(await batch_write(writes))

        self.store.update_execution_states = counted  # type: ignore[method-assign]


async def test_monitor_cycle_writes_quiet_states_in_one_batch_and_a_stop_alone() -> None:
    # Arrange: three quiet executions and one whose price falls through its stop.
    rig = CountingRig()
    quiet = [rig.runner({f"Q{i}": 10}) for i in range(3)]
    falling = rig.runner({"DROP": 10})
    rig.prices.prices = {"Q0": Decimal(101), "Q1": Decimal(99), "Q2": Decimal(100)}
    rig.prices.prices["DROP"] = Decimal(90)

    # Act
    await rig.worker.monitor_cycle()

    # Assert: one batch of the three quiet ones; the stop went out on its own path.
    assert rig.batches == [3]
    assert [i.symbol for i in rig.stops(falling)] == ["DROP"]
    assert set(rig.store.state_writes) >= {r.execution_id for r in [*quiet, falling]}
    assert not any(r.lock.locked() for r in [*quiet, falling])
    assert len(rig.store.snapshots) == 4


async def test_monitor_cycle_when_a_fence_is_lost_then_that_execution_is_dropped() -> None:
    rig = Rig()
    kept, lost = rig.runner({"A": 10}), rig.runner({"B": 10})
    rig.prices.prices = {"A": Decimal(100), "B": Decimal(100)}

    async def fenced(writes: Sequence[StateWrite]) -> set[object]:
        return {lost.execution_id}

    rig.store.update_execution_states = fenced  # type: ignore[method-assign]

    await rig.worker.monitor_cycle()

    assert set(rig.worker.runners) == {kept.execution_id}
    assert not lost.lock.locked()
