"""The PostgreSQL store and the in-memory store (`testing/memory_store.py`) answer the same
calls alike: the simulation runs the runtime on the memory store, so wherever the two part,
what the simulation proves does not hold in production. Each test here is a difference the
simulation's PostgreSQL variant (`testing/simulation/postgres_variant.py`) found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import FillRecord, Store
from strategy_worker.testing.memory_store import MemoryDatabase, MemoryStore

from .factories import T0, commit_one, create, fill, intent, new_execution, step


@pytest.fixture
def memory() -> MemoryStore:
    return MemoryDatabase(now=lambda: T0).handle()


def keys(fills: Sequence[FillRecord]) -> list[tuple[str, str]]:
    return [(f.fill.client_order_id, f.fill.fill_id) for f in fills]


async def record_fills_out_of_time_order(store: Store, execution_id: uuid.UUID) -> None:
    """Order 2's fill, then order 1's at the same instant (both found by reconciliation:
    no report seq), then one of order 1 that happened before both, with a report seq."""
    first, second = intent(execution_id, 1), intent(execution_id, 2)
    record = await store.get_execution(execution_id)
    assert record is not None
    record = await commit_one(store, step(record, intents=[first, second], next_intent_seq=3))
    at = fill(first, 1, quantity="10", price="175.5").filled_at
    late = replace(fill(second, 1, quantity="5", price="175.6"), filled_at=at)
    for write in (
        [FillRecord(fill=late)],
        [FillRecord(fill=fill(first, 1, quantity="10", price="175.5"))],
        [FillRecord(fill=replace(fill(first, 2, quantity="3", price="175.4"),
                                 filled_at=at - timedelta(seconds=5)), oms_seq=7)],
    ):  # fmt: skip
        record = await commit_one(store, step(record, fills=write))


async def test_both_stores_read_fills_in_the_order_they_happened_not_as_recorded(
    store: PostgresStore, memory: MemoryStore
) -> None:
    # Arrange
    execution = new_execution()
    for each in (store, memory):
        await create(each, execution)
        await record_fills_out_of_time_order(each, execution.execution_id)
    first, second = intent(execution.execution_id, 1), intent(execution.execution_id, 2)
    happened = [
        (first.client_order_id, fill(first, 2, quantity="3", price="1").fill_id),
        (first.client_order_id, fill(first, 1, quantity="1", price="1").fill_id),
        (second.client_order_id, fill(second, 1, quantity="1", price="1").fill_id),
    ]

    # Act
    read = {name: await s.get_fills(execution.execution_id) for name, s in
            (("postgres", store), ("memory", memory))}  # fmt: skip
    loaded = {name: (await s.load_executions([execution.execution_id]))[0].fills for name, s in
              (("postgres", store), ("memory", memory))}  # fmt: skip

    # Assert
    assert keys(read["postgres"]) == happened
    assert keys(read["memory"]) == happened
    assert keys(loaded["postgres"]) == keys(loaded["memory"]) == happened
