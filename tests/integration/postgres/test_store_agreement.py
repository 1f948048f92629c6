"""The PostgreSQL store and the in-memory store (`testing/memory_store.py`) answer the same
calls alike: the simulation runs the runtime on the memory store, so wherever the two part,
what the simulation proves does not hold in production. Each test here is a difference the
simulation's PostgreSQL variant (`testing/simulation/postgres_variant.py`) found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.order_state import can_transition
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.store import FillRecord, OrderUpdate, Store
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


REACHED = {
    OrderStatus.FILLED: Decimal("10"),
    OrderStatus.CANCELLED: Decimal("4"),
    OrderStatus.REJECTED: Decimal("0"),
}
"""Terminal statuses, with the filled quantity the order (of 10) reached them at."""


def _update_to(target: OrderStatus, done: Decimal) -> OrderUpdate:
    """An update to `target` that never lowers the filled quantity (FILLED fills it)."""
    quantity = Decimal("10") if target is OrderStatus.FILLED else min(done + 2, Decimal("9"))
    return OrderUpdate(
        client_order_id="",
        status=target,
        filled_quantity=max(quantity, done),
        filled_price=Decimal("175.5") if quantity else None,
    )


async def _order_after(
    store: Store, stored: OrderStatus, update: OrderUpdate
) -> tuple[OrderStatus, Decimal]:
    execution = new_execution()
    order = intent(execution.execution_id, 1, quantity="10")
    record = await create(store, execution, intents=[order], next_intent_seq=2)
    done = REACHED[stored]
    reach = OrderUpdate(
        client_order_id=order.client_order_id,
        status=stored,
        filled_quantity=done,
        filled_price=Decimal("175.5") if done else None,
    )
    record = await commit_one(store, step(record, order_updates=[reach]))
    await commit_one(
        store,
        step(record, order_updates=[replace(update, client_order_id=order.client_order_id)]),
    )
    (found,) = await store.get_orders(execution.execution_id)
    return found.status, found.filled_quantity


@pytest.mark.parametrize("stored", list(REACHED), ids=str)
@pytest.mark.parametrize("target", list(OrderStatus), ids=str)
async def test_both_stores_move_a_terminal_order_only_as_the_order_state_machine_allows(
    store: PostgresStore, memory: MemoryStore, stored: OrderStatus, target: OrderStatus
) -> None:
    # Arrange: an order in a terminal status, and an update that moves it to `target`
    update = _update_to(target, REACHED[stored])
    allowed = target is stored or can_transition(stored, target)
    expected = (target, update.filled_quantity) if allowed else (stored, REACHED[stored])

    # Act
    in_postgres = await _order_after(store, stored, update)
    in_memory = await _order_after(memory, stored, update)

    # Assert: a late fill completes a cancelled order; nothing else leaves a terminal
    # status (a stale update is skipped), in either store
    assert in_postgres == expected
    assert in_memory == expected
