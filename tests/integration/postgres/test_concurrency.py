"""Two writers at once on the real PostgreSQL: duplicates stay impossible."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore

from .factories import intent, new_execution

pytestmark = pytest.mark.integration

ROUNDS = 25


async def test_concurrent_double_insert_of_one_client_order_id_yields_one_row(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    for _ in range(ROUNDS):
        execution = new_execution()
        await store.create_execution(execution)
        order = intent(execution.execution_id, 1)

        results = await asyncio.gather(
            store.record_intents(execution.execution_id, [order], next_intent_seq=2, fence=None),
            other_store.record_intents(
                execution.execution_id, [order], next_intent_seq=2, fence=None
            ),
        )

        assert sorted(results) == [[], [order.client_order_id]]
        rows = await raw_conn.fetchval(
            "SELECT count(*) FROM execution_orders WHERE client_order_id = $1",
            order.client_order_id,
        )
        assert rows == 1


async def test_concurrent_plain_inserts_of_one_client_order_id_one_fails_on_the_constraint(
    migrated_dsn: str, store: PostgresStore
) -> None:
    execution = new_execution()
    await store.create_execution(execution)
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
    count = await store.get_orders(execution.execution_id)
    assert [o.client_order_id for o in count] == ["dup-coid"]


async def test_concurrent_creation_from_one_message_creates_one_execution(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    for _ in range(ROUNDS):
        execution = new_execution()
        intents = [intent(execution.execution_id, 1)]

        results = await asyncio.gather(
            store.create_execution(execution, intents, owner_id="w-a", lease_seconds=30),
            other_store.create_execution(execution, intents, owner_id="w-b", lease_seconds=30),
        )

        assert sorted(results) == [False, True]
        loaded = await store.get_execution(execution.execution_id)
        assert loaded is not None
        assert loaded.owner_id == ("w-a" if results[0] else "w-b")
        assert len(await store.get_orders(execution.execution_id)) == 1
