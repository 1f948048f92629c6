"""Two writers at once on the real PostgreSQL: duplicates stay impossible."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore

from .factories import create, creation, intent, new_execution, step

pytestmark = pytest.mark.integration

ROUNDS = 25


async def test_one_write_committed_by_two_stores_at_once_is_applied_once(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # A worker that retries a commit on a second connection while the first is still in
    # flight: the version makes the second a no-op, whichever wins the row lock.
    for _ in range(ROUNDS):
        execution = new_execution()
        record = await create(store, execution)
        order = intent(execution.execution_id, 1)
        write = step(record, intents=[order])

        first, second = await asyncio.gather(store.commit([write]), other_store.commit([write]))

        assert sorted([len(first.lost), len(second.lost)]) == [0, 1]
        rows = await raw_conn.fetchval(
            "SELECT count(*) FROM execution_orders WHERE client_order_id = $1",
            order.client_order_id,
        )
        assert rows == 1
        loaded = await store.get_execution(execution.execution_id)
        assert loaded is not None
        assert loaded.version == 2


async def test_concurrent_plain_inserts_of_one_client_order_id_one_fails_on_the_constraint(
    migrated_dsn: str, store: PostgresStore
) -> None:
    execution = new_execution()
    await create(store, execution)
    insert = (
        "INSERT INTO execution_orders (order_id, execution_id, client_order_id, intent_seq, "
        "symbol, side, order_type, purpose, quantity, price) "
        "VALUES ($1, $2, 'dup-coid', $3, 'AAPL', 'BUY', 'MARKET', 'INITIAL', 1, 1)"
    )
    first = await asyncpg.connect(migrated_dsn)
    second = await asyncpg.connect(migrated_dsn)
    try:
        tx = first.transaction()
        await tx.start()
        await first.execute(insert, uuid.uuid4(), execution.execution_id, 1)
        # The second insert blocks on the first's uncommitted row, then must fail.
        blocked = asyncio.create_task(
            second.execute(insert, uuid.uuid4(), execution.execution_id, 2)
        )
        await asyncio.sleep(0.2)
        assert not blocked.done()
        await tx.commit()

        with pytest.raises(asyncpg.UniqueViolationError):
            await blocked
    finally:
        await first.close()
        await second.close()
    orders = await store.get_orders(execution.execution_id)
    assert [o.client_order_id for o in orders] == ["dup-coid"]


async def test_concurrent_creation_from_one_message_creates_one_execution(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    for _ in range(ROUNDS):
        execution = new_execution()
        intents = [intent(execution.execution_id, 1)]

        a, b = await asyncio.gather(
            store.commit([creation(execution, owner="w-a", intents=intents)]),
            other_store.commit([creation(execution, owner="w-b", intents=intents)]),
        )

        assert sorted([len(a.created), len(b.created)]) == [0, 1]
        assert a.existed | b.existed == {execution.execution_id}
        loaded = await store.get_execution(execution.execution_id)
        assert loaded is not None
        assert loaded.owner_id == ("w-a" if a.created else "w-b")
        assert len(await store.get_orders(execution.execution_id)) == 1
