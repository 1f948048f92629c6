"""Execution ownership through leases on the real PostgreSQL: one driver at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import ExecutionStatus, Fence, FillRecord

from .factories import busy_state, commit_one, create, fill, intent, new_execution, step

pytestmark = pytest.mark.integration


async def _unowned(store: PostgresStore, n: int) -> set[uuid.UUID]:
    return {(await create(store, new_execution(), release=True)).execution_id for _ in range(n)}


async def _expire(conn: asyncpg.Connection, execution_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE strategy_executions SET lease_expires_at = now() WHERE execution_id = $1",
        execution_id,
    )


async def test_two_owners_acquiring_at_once_never_get_the_same_execution(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
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
    held_a = await raw_conn.fetch(
        "SELECT execution_id FROM strategy_executions WHERE owner_id = 'owner-a'"
    )
    assert {r["execution_id"] for r in held_a} == a


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced_out(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    old = await create(store, execution, owner="old", intents=[order])
    await _expire(raw_conn, execution.execution_id)

    taken = [
        e
        for e in await other_store.acquire_executions("new", lease_seconds=60, limit=1000)
        if e.execution_id == execution.execution_id
    ]

    assert len(taken) == 1
    assert taken[0].fence == Fence(owner_id="new", epoch=2)
    assert taken[0].version == old.version  # acquiring is not a commit
    stale = await store.commit(
        [
            step(
                old,
                state=busy_state(),
                intents=[intent(execution.execution_id, 2)],
                fills=[FillRecord(fill=fill(order, 1, quantity="1", price="1"))],
            )
        ]
    )
    assert stale.lost == {execution.execution_id}
    assert await store.renew_leases("old", [execution.execution_id], lease_seconds=60) == set()
    # Nothing the fenced-out writer attempted is visible.
    assert [o.intent_seq for o in await store.get_orders(execution.execution_id)] == [1]
    assert await store.get_fills(execution.execution_id) == []
    loaded = await commit_one(other_store, step(taken[0], state=busy_state()))
    assert loaded.state.status is ExecutionStatus.PAUSED


async def test_a_restarted_worker_reclaims_its_leases_under_a_new_epoch(
    store: PostgresStore,
) -> None:
    before = await create(store, new_execution(), owner="restarted")

    plain = await store.acquire_executions("restarted", lease_seconds=60, limit=1000)
    reclaimed = [
        e
        for e in await store.acquire_executions(
            "restarted", lease_seconds=60, limit=1000, reclaim=True
        )
        if e.execution_id == before.execution_id
    ]

    assert before.execution_id not in {e.execution_id for e in plain}
    assert [e.fence for e in reclaimed] == [Fence(owner_id="restarted", epoch=2)]
    previous_process = await store.commit([step(before)])
    assert previous_process.lost == {before.execution_id}


async def test_renew_extends_only_leases_still_held(store: PostgresStore) -> None:
    held = await create(store, new_execution(), owner="renewer")
    other = await create(store, new_execution(), owner="someone-else")

    renewed = await store.renew_leases(
        "renewer", [held.execution_id, other.execution_id], lease_seconds=600
    )
    after = await store.get_execution(held.execution_id)

    assert renewed == {held.execution_id}
    assert after is not None
    assert held.lease_expires_at is not None
    assert after.lease_expires_at is not None
    assert after.lease_expires_at > held.lease_expires_at
    assert after.lease_epoch == held.lease_epoch


async def test_released_execution_is_acquired_at_once_by_another_worker(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    execution = await create(store, new_execution(), owner="leaving")

    released = await store.release_executions("leaving", [execution.execution_id])
    taken = await other_store.acquire_executions("arriving", lease_seconds=60, limit=1000)

    assert released == {execution.execution_id}
    assert execution.execution_id in {e.execution_id for e in taken}


async def test_live_leases_and_finished_executions_are_never_acquired(
    store: PostgresStore,
) -> None:
    live = await create(store, new_execution(), owner="alive")
    finished = await create(store, new_execution())
    done = dataclasses.replace(finished.state, status=ExecutionStatus.COMPLETED)
    await commit_one(store, step(finished, state=done, release=True))

    taken = await store.acquire_executions("thief", lease_seconds=60, limit=1000)

    ids = {e.execution_id for e in taken}
    assert live.execution_id not in ids
    assert finished.execution_id not in ids
