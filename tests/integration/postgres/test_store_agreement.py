"""The PostgreSQL store and the in-memory store (`testing/memory_store.py`) answer the same
calls alike: the simulation runs the runtime on the memory store, so wherever the two part,
what the simulation proves does not hold in production. Each test here is a difference the
simulation's PostgreSQL variant (`testing/simulation/postgres_variant.py`) found."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.order_state import can_transition
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.store import (
    ExecutionRecord,
    ExecutionStatus,
    FillRecord,
    OrderUpdate,
    Store,
)
from strategy_worker.testing.memory_store import MemoryDatabase, MemoryStore

from .factories import (
    T0,
    busy_state,
    commit_one,
    create,
    creation,
    fill,
    intent,
    new_execution,
    outbox_event,
    risk_event,
    snapshot,
    step,
)


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


async def _outcome(call: Awaitable[object]) -> object:
    """What a call answered, or the class of the error it raised."""
    try:
        return await call
    except Exception as exc:
        return type(exc).__name__


async def _record(store: Store, execution_id: uuid.UUID) -> ExecutionRecord:
    record = await store.get_execution(execution_id)
    assert record is not None
    return record


async def creation_carrying_a_state(store: Store) -> object:
    execution = new_execution()
    await store.commit([creation(execution, state=busy_state())])
    record = await _record(store, execution.execution_id)
    return record.state.status, record.state.cash


async def creation_without_next_intent_seq(store: Store) -> object:
    execution = new_execution()
    intents = [intent(execution.execution_id, 1), intent(execution.execution_id, 2)]
    await store.commit([creation(execution, intents=intents)])
    return (await _record(store, execution.execution_id)).next_intent_seq


async def creation_that_releases(store: Store) -> object:
    execution = new_execution()
    await store.commit([creation(execution, release=True)])
    record = await _record(store, execution.execution_id)
    return record.owner_id, record.lease_expires_at


async def next_intent_seq_without_a_state(store: Store) -> object:
    execution = new_execution()
    record = await create(store, execution)
    record = await commit_one(store, step(record, next_intent_seq=5))
    seqs = [record.next_intent_seq]
    record = await commit_one(store, step(record, state=record.state, next_intent_seq=2))
    return [*seqs, record.next_intent_seq]  # never lowered


async def update_of_an_unknown_order(store: Store) -> object:
    record = await create(store, new_execution())
    update = OrderUpdate(
        client_order_id="sw-never-recorded", status=OrderStatus.ACCEPTED, filled_quantity=ZERO
    )
    outcome = await _outcome(store.commit([step(record, order_updates=[update])]))
    if isinstance(outcome, str):
        return outcome
    return (await _record(store, record.execution_id)).version


async def update_of_another_executions_order(store: Store) -> object:
    mine, theirs = new_execution(), new_execution()
    order = intent(theirs.execution_id, 1)
    record = await create(store, mine)
    await create(store, theirs, intents=[order], next_intent_seq=2)
    update = OrderUpdate(
        client_order_id=order.client_order_id, status=OrderStatus.ACCEPTED, filled_quantity=ZERO
    )
    outcome = await _outcome(store.commit([step(record, order_updates=[update])]))
    (found,) = await store.get_orders(theirs.execution_id)
    return outcome if isinstance(outcome, str) else found.status


async def fill_of_another_executions_order(store: Store) -> object:
    mine, theirs = new_execution(), new_execution()
    order = intent(theirs.execution_id, 1)
    record = await create(store, mine)
    await create(store, theirs, intents=[order], next_intent_seq=2)
    fills = [FillRecord(fill=fill(order, 1, quantity="1", price="175.5"))]
    outcome = await _outcome(store.commit([step(record, fills=fills)]))
    return outcome, len(await store.get_fills(theirs.execution_id))


async def one_strategy_running_twice(store: Store) -> object:
    first = new_execution()
    later = new_execution(strategy_id=first.strategy_id, approved_at=T0 + timedelta(hours=1))
    await create(store, later)
    await create(store, first)
    running = await store.running_strategies([first.strategy_id])
    return running[first.strategy_id] == later.execution_id  # the latest approved


async def history_at_one_instant(store: Store) -> object:
    record = await create(store, new_execution())
    eid = record.execution_id
    events = [replace(risk_event(eid, n), occurred_at=T0) for n in range(4)]
    snaps = [replace(snapshot(eid, n), taken_at=T0) for n in range(4)]
    await commit_one(store, step(record, risk_events=events, snapshots=snaps))
    risk = [e.event_id for e in await store.get_risk_events(eid)]
    latest = [s.snapshot_id for s in await store.get_snapshots(eid, limit=2)]
    return risk == sorted(risk), latest == sorted(s.snapshot_id for s in snaps)[:2]


AGREED: list[tuple[Callable[[Store], Awaitable[object]], object]] = [
    (creation_carrying_a_state, (ExecutionStatus.PAUSED, busy_state().cash)),
    (creation_without_next_intent_seq, 3),
    (creation_that_releases, (None, None)),
    (next_intent_seq_without_a_state, [5, 5]),
    (update_of_an_unknown_order, 2),  # skipped; the rest of the write holds
    (update_of_another_executions_order, OrderStatus.PENDING),  # skipped
    (fill_of_another_executions_order, ("StoreError", 0)),  # a fill is never dropped
    (one_strategy_running_twice, True),
    (history_at_one_instant, (True, True)),  # ties by id
]


@pytest.mark.parametrize(("scenario", "expected"), AGREED, ids=[f.__name__ for f, _ in AGREED])
async def test_both_stores_apply_the_same_calls_alike(
    store: PostgresStore,
    memory: MemoryStore,
    scenario: Callable[[Store], Awaitable[object]],
    expected: object,
) -> None:
    # Act
    in_postgres = await scenario(store)
    in_memory = await scenario(memory)

    # Assert
    assert in_postgres == expected
    assert in_memory == expected


async def test_both_stores_prune_every_published_event_but_the_last_and_refuse_unknown_seqs(
    store: PostgresStore, memory: MemoryStore
) -> None:
    # Arrange: three events committed and published by each store
    answers = {}
    for name, each in (("postgres", store), ("memory", memory)):
        execution = new_execution()
        record = await create(each, execution)
        events = [outbox_event(execution, n) for n in range(3)]
        await commit_one(each, step(record, events=events))
        rows = await each.claim_outbox(limit=10)
        await each.mark_published([r.seq for r in rows])

        # Act
        pruned = await each.prune_outbox(
            published_before=datetime.now(UTC) + timedelta(days=1), limit=100
        )
        unknown = await _outcome(each.mark_published([rows[-1].seq + 1000]))
        answers[name] = (len(rows), pruned, unknown)

    # Assert: the last published event stays (the publish numbering continues from it)
    assert answers["postgres"] == answers["memory"] == (3, 2, "StoreError")
