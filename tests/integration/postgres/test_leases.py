"""Execution ownership through leases on the real PostgreSQL: one driver at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import (
    ExecutionStatus,
    Fence,
    FillRecord,
    LeaseLostError,
    StateWrite,
)

from .factories import busy_state, fill, intent, new_execution

pytestmark = pytest.mark.integration


async def _unowned(store: PostgresStore, n: int) -> set[uuid.UUID]:
    ids = set()
    for _ in range(n):
        execution = new_execution()
        await store.create_execution(execution)
        ids.add(execution.execution_id)
    return ids


async def test_two_owners_acquiring_at_once_never_get_the_same_execution(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    mine = await _unowned(store, 30)
    taken: dict[str, list[uuid.UUID]] = {"a": [], "b": []}

    while True:
        got_a, got_b = await asyncio.gather(
            store.acquire_executions("owner-a", lease_seconds=60, limit=4),
            other_store.acquire_executions("owner-b", lease_seconds=60, limit=4),
        )
        if not got_a and not got_b:
            break
        taken["a"] += [e.execution_id for e in got_a]
        taken["b"] += [e.execution_id for e in got_b]

    a, b = set(taken["a"]), set(taken["b"])
    assert len(a) == len(taken["a"])
    assert len(b) == len(taken["b"])
    assert a.isdisjoint(b)
    assert mine <= a | b
    assert a  # both really competed
    assert b
    held_a = await store.list_executions_by_status([ExecutionStatus.ACTIVE], owner_id="owner-a")
    assert {e.execution_id for e in held_a} == a


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced_out(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    await store.create_execution(execution, [order], owner_id="old", lease_seconds=0.3)
    old_fence = Fence(owner_id="old", epoch=1)
    await asyncio.sleep(0.5)

    taken = [
        e
        for e in await other_store.acquire_executions("new", lease_seconds=60, limit=1000)
        if e.execution_id == execution.execution_id
    ]

    assert len(taken) == 1
    new_fence = taken[0].fence
    assert new_fence == Fence(owner_id="new", epoch=2)
    with pytest.raises(LeaseLostError, match="held by new"):
        await store.update_execution_state(execution.execution_id, busy_state(), fence=old_fence)
    with pytest.raises(LeaseLostError):
        await store.record_intents(
            execution.execution_id,
            [intent(execution.execution_id, 2)],
            next_intent_seq=3,
            fence=old_fence,
        )
    with pytest.raises(LeaseLostError):
        await store.record_order_reports(
            fills=[FillRecord(fill=fill(order, 1, quantity="1", price="1"))],
            states=[
                StateWrite(execution_id=execution.execution_id, state=busy_state(), fence=old_fence)
            ],
        )
    assert await store.renew_leases("old", [execution.execution_id], lease_seconds=60) == set()
    # Nothing the fenced-out writer attempted is visible.
    assert [o.intent_seq for o in await store.get_orders(execution.execution_id)] == [1]
    assert await store.get_fills(execution.execution_id) == []
    await other_store.update_execution_state(execution.execution_id, busy_state(), fence=new_fence)
    loaded = await store.get_execution(execution.execution_id)
    assert loaded is not None
    assert loaded.state.status is ExecutionStatus.PAUSED


async def test_renew_extends_only_leases_still_held(store: PostgresStore) -> None:
    held, other = new_execution(), new_execution()
    await store.create_execution(held, owner_id="renewer", lease_seconds=5)
    await store.create_execution(other, owner_id="someone-else", lease_seconds=5)
    before = await store.get_execution(held.execution_id)

    renewed = await store.renew_leases(
        "renewer", [held.execution_id, other.execution_id], lease_seconds=60
    )
    after = await store.get_execution(held.execution_id)

    assert renewed == {held.execution_id}
    assert before is not None
    assert after is not None
    assert before.lease_expires_at is not None
    assert after.lease_expires_at is not None
    assert after.lease_expires_at > before.lease_expires_at
    assert after.lease_epoch == before.lease_epoch


async def test_released_execution_is_acquired_at_once_by_another_worker(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    execution = new_execution()
    await store.create_execution(execution, owner_id="leaving", lease_seconds=600)

    released = await store.release_executions("leaving", [execution.execution_id])
    taken = await other_store.acquire_executions("arriving", lease_seconds=60, limit=1000)

    assert released == {execution.execution_id}
    assert execution.execution_id in {e.execution_id for e in taken}


async def test_live_leases_and_finished_executions_are_never_acquired(
    store: PostgresStore,
) -> None:
    live, finished = new_execution(), new_execution()
    await store.create_execution(live, owner_id="alive", lease_seconds=600)
    await store.create_execution(finished)
    stopped = dataclasses.replace(finished.state, status=ExecutionStatus.COMPLETED)
    await store.update_execution_state(finished.execution_id, stopped, fence=None)

    taken = await store.acquire_executions("thief", lease_seconds=60, limit=1000)

    ids = {e.execution_id for e in taken}
    assert live.execution_id not in ids
    assert finished.execution_id not in ids
