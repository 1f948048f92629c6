"""The protection book in the one commit (issue 16) on the real PostgreSQL: protective
intents with every column, the book's state in `execution_protection` with them, fenced,
replays compared on every column, quiet writes of ratcheted watermarks, the restore read."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.orders import (
    OmsCapabilities,
    OrderIntent,
    OrderStatus,
    OrderType,
    Trail,
)
from strategy_worker.domain.protection import ProtectionBook, ProtectionSpec
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.store import Fence, IntentConflictError, MarkWrite, ProtectionWrite

from .factories import T0, create, new_execution, step

pytestmark = pytest.mark.integration

D = Decimal
FULL = OmsCapabilities(
    order_types=frozenset(OrderType), oco_groups=True, reduce_only=True, order_groups=True
)
SPEC = ProtectionSpec(
    stop_loss_pct=D("0.05"),
    trailing_stop_pct=D("0.1"),
    take_profit_pct=D("0.25"),
    limit_offset_pct=D("0.01"),
    placement=ProtectionPlacement.AUTO,
)


def armed(execution_id: uuid.UUID) -> tuple[ProtectionBook, tuple[OrderIntent, ...]]:
    """A book holding 100 AAPL at 100 with its three legs decided (native, one group)."""
    book = ProtectionBook(execution_id, SPEC, capabilities=FULL)
    book.on_position("AAPL", D(100), D(10000))
    book.on_price("AAPL", D("104.5"), T0)
    decided = book.decide(at=T0, next_seq=1)
    assert len(decided.intents) == 3
    return book, decided.intents


def written(book: ProtectionBook, unprotected: int = 0) -> ProtectionWrite:
    return ProtectionWrite(state=book.to_json(), unprotected=unprotected)


async def test_protective_intents_and_the_books_state_are_committed_together(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    record = await create(store, execution)
    book, intents = armed(execution.execution_id)

    outcome = await store.commit(
        [step(record, intents=intents, next_intent_seq=4, protection=written(book))]
    )
    assert outcome.lost == frozenset()

    orders = await store.get_orders(execution.execution_id)
    assert [o.intent for o in orders] == list(intents)  # every column, read back
    stop, trail, take = orders
    assert (stop.order_type, stop.stop_price, stop.limit_price) == (
        OrderType.STOP_LIMIT,
        D("95.0000"),
        D("94.0500"),
    )
    assert trail.trail == Trail(pct=D("0.1"), limit_offset=D("0.9405"), reference_price=D("104.5"))
    assert take.limit_price == D("125.0000")
    assert {o.oco_group_id for o in orders} == {intents[0].oco_group_id}
    assert all(o.reduce_only for o in orders)
    states = await store.load_protection([execution.execution_id, uuid.uuid4()])
    assert states == {execution.execution_id: book.to_json()}
    restored = ProtectionBook.from_json(
        states[execution.execution_id],
        execution_id=execution.execution_id,
        spec=SPEC,
        capabilities=FULL,
    )
    assert restored.to_json() == book.to_json()
    assert all(restored.is_resting_leg(i.client_order_id) for i in intents)


async def test_a_replayed_protective_intent_is_compared_on_every_column(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    record = await create(store, execution)
    book, intents = armed(execution.execution_id)
    record = await _commit(store, step(record, intents=intents, protection=written(book)))

    same = await store.commit([step(record, intents=intents)])  # a harmless replay
    assert same.lost == frozenset()
    record = await store.get_execution(execution.execution_id)
    assert record is not None
    other_trail = replace(intents[1], trail=replace(intents[1].trail, pct=D("0.2")))  # type: ignore[type-var]
    with pytest.raises(IntentConflictError):
        await store.commit([step(record, intents=[other_trail])])


async def test_the_protection_state_is_fenced_with_the_write_that_carries_it(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    record = await create(store, execution)
    book, _ = armed(execution.execution_id)
    stale = Fence(owner_id="someone-else", epoch=record.lease_epoch)

    outcome = await store.commit([step(record, fence=stale, protection=written(book))])

    assert outcome.lost == {execution.execution_id}
    assert await store.load_protection([execution.execution_id]) == {}


async def test_a_quiet_write_keeps_a_ratcheted_watermark_and_the_unprotected_count(
    store: PostgresStore, migrated_dsn: str
) -> None:
    execution = new_execution()
    record = await create(store, execution)
    book, intents = armed(execution.execution_id)
    record = await _commit(store, step(record, intents=intents, protection=written(book)))
    book.on_price("AAPL", D("111.25"), T0)  # a quiet mark ratchets the trail

    missed = await store.record_marks(
        [
            MarkWrite(
                execution_id=execution.execution_id,
                fence=record.fence,  # type: ignore[arg-type]
                version=record.version,
                unrealized_pnl=D("1125"),
                total_pnl=D("1125"),
                protection=written(book, unprotected=1),
            )
        ]
    )

    assert missed == set()
    state = (await store.load_protection([execution.execution_id]))[execution.execution_id]
    assert state["guards"]["AAPL"]["watermark"] == "111.25"
    import asyncpg

    conn = await asyncpg.connect(migrated_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT unprotected, revision FROM execution_protection WHERE execution_id = $1",
            execution.execution_id,
        )
    finally:
        await conn.close()
    assert (row["unprotected"], row["revision"]) == (1, 2)
    orders = await store.get_orders(execution.execution_id)
    assert {o.status for o in orders} == {OrderStatus.PENDING}


async def _commit(store: PostgresStore, write):  # type: ignore[no-untyped-def]
    outcome = await store.commit([write])
    assert outcome.lost == frozenset()
    record = await store.get_execution(write.execution_id)
    assert record is not None
    return record
