"""Creating a poll's worth of executions in one transaction, on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import ExecutionDraft, Fence, StateWrite

from .factories import busy_state, intent, new_execution

pytestmark = pytest.mark.integration


def _drafts(count: int) -> list[ExecutionDraft]:
    drafts = []
    for _ in range(count):
        execution = new_execution()
        eid = execution.execution_id
        orders = [intent(eid, 1, symbol="AAPL"), intent(eid, 2, symbol="MSFT")]
        drafts.append(ExecutionDraft(execution=execution, intents=orders, next_intent_seq=3))
    return drafts


async def _orders_of(conn: asyncpg.Connection, drafts: list[ExecutionDraft]) -> int:
    ids = [d.execution.execution_id for d in drafts]
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM execution_orders WHERE execution_id = ANY($1::uuid[])", ids
        )
    )


async def test_create_executions_writes_every_execution_with_its_intents(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    drafts = _drafts(5)

    created = await store.create_executions(drafts, owner_id="w1", lease_seconds=30)

    assert created == {d.execution.execution_id for d in drafts}
    assert await _orders_of(raw_conn, drafts) == 10
    loaded = await store.get_execution(drafts[0].execution.execution_id)
    assert loaded is not None
    assert loaded.owner_id == "w1"
    assert loaded.next_intent_seq == 3


async def test_create_executions_when_some_exist_then_creates_only_the_new_ones(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    drafts = _drafts(4)
    await store.create_executions(drafts[:2])

    created = await store.create_executions(drafts)
    again = await store.create_executions(drafts)

    assert created == {d.execution.execution_id for d in drafts[2:]}
    assert again == set()
    assert await _orders_of(raw_conn, drafts) == 8  # nothing written twice


async def test_existing_executions_returns_only_the_ids_that_exist(store: PostgresStore) -> None:
    drafts = _drafts(3)
    await store.create_executions(drafts[:2])
    ids = [d.execution.execution_id for d in drafts]

    existing = await store.existing_executions(ids)

    assert existing == set(ids[:2])
    assert await store.existing_executions([]) == set()


async def test_two_workers_creating_overlapping_batches_in_any_order_create_each_once(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Opposite orders would deadlock on the unique index without the id ordering.
    rng = random.Random(7)
    for _ in range(10):
        drafts = _drafts(6)
        mine, theirs = list(drafts), list(drafts)
        rng.shuffle(mine)
        theirs.reverse()

        results = await asyncio.wait_for(
            asyncio.gather(store.create_executions(mine), other_store.create_executions(theirs)),
            timeout=20,
        )

        assert results[0].isdisjoint(results[1])
        assert results[0] | results[1] == {d.execution.execution_id for d in drafts}
        assert await _orders_of(raw_conn, drafts) == 12


async def test_update_execution_states_writes_exactly_and_reports_fenced_out_ids(
    store: PostgresStore,
) -> None:
    # Arrange: two executions owned by "w1", a third whose fence is stale, a fourth unknown.
    drafts = _drafts(3)
    await store.create_executions(drafts, owner_id="w1", lease_seconds=60)
    ids = [d.execution.execution_id for d in drafts]
    good = Fence(owner_id="w1", epoch=1)
    stale = Fence(owner_id="w1", epoch=7)
    unknown = new_execution().execution_id
    state = busy_state()
    writes = [
        StateWrite(execution_id=ids[0], state=state, fence=good),
        StateWrite(execution_id=ids[1], state=state, fence=None),
        StateWrite(execution_id=ids[2], state=state, fence=stale),
        StateWrite(execution_id=unknown, state=state, fence=good),
    ]

    # Act
    not_written = await store.update_execution_states(writes)

    # Assert: the fenced-out and the unknown ones are reported; the others are stored
    # exactly as the one-at-a-time write stores them (JSONB decimals as their text).
    assert not_written == {ids[2], unknown}
    reference = _drafts(1)[0].execution
    await store.create_execution(reference)
    await store.update_execution_state(reference.execution_id, state, fence=None)
    expected = await store.get_execution(reference.execution_id)
    assert expected is not None
    for execution_id in ids[:2]:
        loaded = await store.get_execution(execution_id)
        assert loaded is not None
        assert loaded.state == expected.state
        assert loaded.state.cash == state.cash
    untouched = await store.get_execution(ids[2])
    assert untouched is not None
    assert untouched.state == drafts[2].execution.state
    assert await store.update_execution_states([]) == set()


async def test_batched_state_writes_and_lease_renewals_at_once_never_deadlock(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    # Two many-row writers on the same executions, handed them in opposite orders.
    drafts = _drafts(200)
    await store.create_executions(drafts, owner_id="w1", lease_seconds=60)
    ids = [d.execution.execution_id for d in drafts]
    fence = Fence(owner_id="w1", epoch=1)
    writes = [StateWrite(execution_id=i, state=busy_state(), fence=fence) for i in ids]
    for _ in range(10):
        results = await asyncio.wait_for(
            asyncio.gather(
                store.update_execution_states(writes),
                other_store.update_execution_states(list(reversed(writes))),
                other_store.renew_leases("w1", list(reversed(ids)), lease_seconds=60),
                store.renew_leases("w1", ids, lease_seconds=60),
            ),
            timeout=20,
        )
        assert results[0] == set()
        assert results[1] == set()
        assert results[2] == set(ids)
        assert results[3] == set(ids)


async def test_state_writes_and_renewals_while_child_rows_are_inserted_then_not_blocked(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Inserting a snapshot (or an order, a risk event) holds a KEY SHARE lock on its
    # execution until commit. A renewal or state batch changes no key, so it must not wait
    # for that: at 10,000 executions a snapshot batch and a renewal, each holding a row the
    # other wanted, deadlocked.
    drafts = _drafts(2)
    await store.create_executions(drafts, owner_id="w1", lease_seconds=60)
    ids = [d.execution.execution_id for d in drafts]
    fence = Fence(owner_id="w1", epoch=1)
    writes = [StateWrite(execution_id=i, state=busy_state(), fence=fence) for i in ids]

    async with raw_conn.transaction():
        for execution_id in reversed(ids):
            await raw_conn.execute(
                "INSERT INTO position_snapshots (snapshot_id, execution_id, taken_at, positions,"
                " total_value, total_pnl, unrealized_pnl) VALUES (gen_random_uuid(), $1, now(),"
                " '{}'::jsonb, 0, 0, 0)",
                execution_id,
            )
        renewed = await asyncio.wait_for(store.renew_leases("w1", ids, lease_seconds=60), timeout=5)
        unwritten = await asyncio.wait_for(store.update_execution_states(writes), timeout=5)

    assert renewed == set(ids)
    assert unwritten == set()
