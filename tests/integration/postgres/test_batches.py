"""Batches on the real PostgreSQL: a poll's worth of executions created in one commit, and
many-row writers (commits, marks, lease renewals) of several stores at once that lock the
same executions in opposite orders and never deadlock."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import ExecutionRecord, ExecutionWrite, Fence, MarkWrite, NewExecution

from .factories import (
    busy_state,
    creation,
    intent,
    new_execution,
    outbox_event,
    risk_event,
    snapshot,
    step,
)

pytestmark = pytest.mark.integration


def _creations(count: int, *, owner: str = "w1") -> list[ExecutionWrite]:
    writes = []
    for _ in range(count):
        execution = new_execution()
        eid = execution.execution_id
        orders = [intent(eid, 1, symbol="AAPL"), intent(eid, 2, symbol="MSFT")]
        writes.append(creation(execution, owner=owner, intents=orders, next_intent_seq=3))
    return writes


async def _orders_of(conn: asyncpg.Connection, writes: list[ExecutionWrite]) -> int:
    ids = [w.execution_id for w in writes]
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM execution_orders WHERE execution_id = ANY($1::uuid[])", ids
        )
    )


async def _records(store: PostgresStore, ids: list[uuid.UUID]) -> list[ExecutionRecord]:
    return [entry.record for entry in await store.load_executions(ids)]


async def test_one_commit_creates_every_execution_with_its_intents(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    writes = _creations(5)

    outcome = await store.commit(writes)

    assert outcome.created == {w.execution_id for w in writes}
    assert await _orders_of(raw_conn, writes) == 10
    loaded = await store.get_execution(writes[0].execution_id)
    assert loaded is not None
    assert (loaded.owner_id, loaded.next_intent_seq) == ("w1", 3)


async def test_a_batch_where_some_exist_creates_only_the_new_ones(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    writes = _creations(4)
    await store.commit(writes[:2])

    first = await store.commit(writes)
    again = await store.commit(writes)

    assert first.created == {w.execution_id for w in writes[2:]}
    assert first.existed == {w.execution_id for w in writes[:2]}
    assert again.created == frozenset()
    assert await _orders_of(raw_conn, writes) == 8  # nothing written twice


async def test_two_workers_creating_overlapping_batches_in_any_order_create_each_once(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Opposite orders would deadlock on the unique index without the id ordering.
    rng = random.Random(7)
    for _ in range(10):
        executions: list[NewExecution] = [new_execution() for _ in range(6)]
        mine = [creation(e, owner="w-a", intents=[intent(e.execution_id, 1)]) for e in executions]
        theirs = [creation(e, owner="w-b", intents=[intent(e.execution_id, 1)]) for e in executions]
        rng.shuffle(mine)
        theirs.reverse()

        a, b = await asyncio.wait_for(
            asyncio.gather(store.commit(mine), other_store.commit(theirs)), timeout=20
        )

        ids = {e.execution_id for e in executions}
        assert a.created.isdisjoint(b.created)
        assert a.created | b.created == ids
        assert a.existed == ids - a.created
        assert b.existed == ids - b.created
        assert await _orders_of(raw_conn, mine) == 6


async def test_overlapping_commits_marks_and_renewals_of_two_stores_never_deadlock(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    # Arrange: 200 executions of one owner; both stores write all of them (with child rows
    # of every kind), in opposite orders, while marks and lease renewals run too.
    created = _creations(200)
    await store.commit(created)
    ids = [w.execution_id for w in created]
    fence = Fence(owner_id="w1", epoch=1)
    executions = {w.execution_id: w.create for w in created}

    def full_step(record: ExecutionRecord, n: int) -> ExecutionWrite:
        execution = executions[record.execution_id]
        assert execution is not None
        eid = record.execution_id
        return step(
            record,
            state=busy_state(),
            risk_events=[risk_event(eid, n)],
            snapshots=[snapshot(eid, n)],
            events=[outbox_event(execution, n)],
        )

    for n in range(10):
        records = await _records(store, ids)
        writes = [full_step(r, n) for r in records]
        marks = [
            MarkWrite(
                execution_id=r.execution_id,
                fence=fence,
                version=r.version,
                unrealized_pnl=Decimal(n),
                total_pnl=Decimal(n),
                snapshot=snapshot(r.execution_id, 1000 + n),
            )
            for r in records
        ]

        # Act
        mine, theirs, _, _, _ = await asyncio.wait_for(
            asyncio.gather(
                store.commit(writes),
                other_store.commit(list(reversed(writes))),
                other_store.record_marks(list(reversed(marks))),
                other_store.renew_leases("w1", list(reversed(ids)), lease_seconds=60),
                store.renew_leases("w1", ids, lease_seconds=60),
            ),
            timeout=30,
        )

        # Assert: each execution's write applied exactly once (the other saw its version move).
        assert mine.lost.isdisjoint(theirs.lost)
        assert mine.lost | theirs.lost == set(ids)
        assert {r.version for r in await _records(store, ids)} == {n + 2}


async def test_commits_and_renewals_while_child_rows_are_inserted_then_not_blocked(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Inserting a snapshot (or an order, a risk event) holds a KEY SHARE lock on its
    # execution until commit. A renewal or a commit changes no key, so it must not wait for
    # that: at 10,000 executions a snapshot batch and a renewal, each holding a row the
    # other wanted, deadlocked.
    created = _creations(2)
    await store.commit(created)
    ids = [w.execution_id for w in created]
    records = await _records(store, ids)

    async with raw_conn.transaction():
        for execution_id in reversed(ids):
            await raw_conn.execute(
                "INSERT INTO position_snapshots (snapshot_id, execution_id, taken_at, positions,"
                " total_value, total_pnl, unrealized_pnl) VALUES (gen_random_uuid(), $1, now(),"
                " '{}'::jsonb, 0, 0, 0)",
                execution_id,
            )
        renewed = await asyncio.wait_for(store.renew_leases("w1", ids, lease_seconds=60), timeout=5)
        outcome = await asyncio.wait_for(
            store.commit([step(r, state=busy_state()) for r in records]), timeout=5
        )

    assert renewed == set(ids)
    assert outcome.lost == frozenset()
