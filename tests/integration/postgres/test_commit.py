"""`commit` and `record_marks` on the real PostgreSQL: one transaction per batch, fenced by
the lease and by state_version, idempotent for every keyed row."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.orders import Fill, OrderStatus, Side
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    ControlCompletion,
    ControlOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionStatus,
    ExecutionWrite,
    Fence,
    FillConflictError,
    FillRecord,
    IntentConflictError,
    MarkWrite,
    OrderUpdate,
)

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

pytestmark = pytest.mark.integration


async def _count(conn: asyncpg.Connection, table: str, execution_id: uuid.UUID) -> int:
    queries = {
        "orders": "SELECT count(*) FROM execution_orders WHERE execution_id = $1",
        "fills": "SELECT count(*) FROM execution_fills f JOIN execution_orders o "
        "USING (client_order_id) WHERE o.execution_id = $1",
        "risk": "SELECT count(*) FROM risk_events WHERE execution_id = $1",
        "snapshots": "SELECT count(*) FROM position_snapshots WHERE execution_id = $1",
        "outbox": "SELECT count(*) FROM event_outbox WHERE execution_id = $1",
    }
    return int(await conn.fetchval(queries[table], execution_id))


async def _everything(conn: asyncpg.Connection, execution_id: uuid.UUID) -> dict[str, int]:
    return {t: await _count(conn, t, execution_id) for t in ("orders", "fills", "risk", "outbox")}


# --- creation --------------------------------------------------------------------------


async def test_creation_stores_the_execution_owned_at_epoch_one_version_one_with_its_rows(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    eid = execution.execution_id
    orders = [intent(eid, 1), intent(eid, 2, symbol="MSFT")]

    outcome = await store.commit(
        [
            creation(
                execution,
                owner="w1",
                intents=orders,
                events=[outbox_event(execution, 1)],
                risk_events=[risk_event(eid, 1)],
            )
        ]
    )
    loaded = await store.get_execution(eid)

    assert outcome.created == {eid}
    assert outcome.existed == outcome.lost == frozenset()
    assert loaded is not None
    assert (loaded.owner_id, loaded.lease_epoch, loaded.version) == ("w1", 1, 1)
    assert loaded.next_intent_seq == 3
    assert loaded.lease_expires_at is not None
    assert loaded.lease_expires_at > loaded.created_at + timedelta(seconds=10)  # 15 s lease
    assert [o.intent for o in await store.get_orders(eid)] == orders
    assert await _everything(raw_conn, eid) == {"orders": 2, "fills": 0, "risk": 1, "outbox": 1}


async def test_replayed_creation_writes_nothing_of_its_write_and_is_reported_existing(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    eid = execution.execution_id
    await create(store, execution, owner="w1", intents=[intent(eid, 1)])

    replay = await store.commit(
        [
            creation(
                execution,
                owner="w2",
                intents=[intent(eid, 1, quantity="9")],  # would conflict if looked at
                events=[outbox_event(execution, 1)],
                risk_events=[risk_event(eid, 1)],
            )
        ]
    )
    loaded = await store.get_execution(eid)

    assert replay.existed == {eid}
    assert replay.created == frozenset()
    assert loaded is not None
    assert loaded.owner_id == "w1"
    assert await _everything(raw_conn, eid) == {"orders": 1, "fills": 0, "risk": 0, "outbox": 0}


async def test_creation_under_another_id_with_the_same_message_key_is_reported_existing(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    await create(store, execution)
    impostor = dataclasses.replace(
        new_execution(strategy_id=execution.strategy_id, approved_at=execution.approved_at),
        execution_id=uuid.uuid4(),
    )

    outcome = await store.commit([creation(impostor)])

    assert outcome.existed == {impostor.execution_id}
    assert await store.get_execution(impostor.execution_id) is None


async def test_creation_with_release_stores_it_unowned(store: PostgresStore) -> None:
    execution = new_execution()

    record = await create(store, execution, release=True)

    assert (record.owner_id, record.lease_expires_at, record.fence) == (None, None, None)
    assert record.lease_epoch == 1


# --- fence and version -------------------------------------------------------------------


async def test_fence_or_version_mismatch_skips_exactly_those_writes_and_all_of_their_rows(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Arrange: four executions owned by w1 at version 1, and one that does not exist.
    executions = [new_execution() for _ in range(4)]
    records = [await create(store, e, owner="w1") for e in executions]
    good = records[0]
    ghost = new_execution()

    def everything(n: int, **changes: object) -> ExecutionWrite:
        execution, eid = executions[n], executions[n].execution_id
        return step(
            records[n],
            state=busy_state(),
            next_intent_seq=2,
            intents=[intent(eid, 1)],
            risk_events=[risk_event(eid, 1)],
            snapshots=[snapshot(eid, 1)],
            events=[outbox_event(execution, 1)],
            **changes,
        )

    writes = [
        everything(0),
        everything(1, fence=Fence(owner_id="w1", epoch=2)),
        everything(2, fence=Fence(owner_id="w2", epoch=1)),
        everything(3, version=3),  # skips version 2
        dataclasses.replace(step(good), execution_id=ghost.execution_id),
    ]

    # Act
    outcome = await store.commit(writes)

    # Assert: only the good write landed, with every kind of row; the others wrote nothing.
    assert outcome.lost == {r.execution_id for r in records[1:]} | {ghost.execution_id}
    assert outcome.created == outcome.existed == frozenset()
    after = await store.get_execution(good.execution_id)
    assert after is not None
    assert (after.version, after.next_intent_seq) == (2, 2)
    assert after.state.status is ExecutionStatus.PAUSED
    assert await _everything(raw_conn, good.execution_id) == {
        "orders": 1,
        "fills": 0,
        "risk": 1,
        "outbox": 1,
    }
    assert await _count(raw_conn, "snapshots", good.execution_id) == 1
    for record in records[1:]:
        untouched = await store.get_execution(record.execution_id)
        assert untouched == record
        assert await _everything(raw_conn, record.execution_id) == dict.fromkeys(
            ("orders", "fills", "risk", "outbox"), 0
        )
        assert await _count(raw_conn, "snapshots", record.execution_id) == 0


async def test_a_paused_worker_that_lost_its_lease_writes_no_risk_row_and_no_event(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Issue 12 item 14: the old owner wakes up after a takeover and decides ACTIVE->REDUCING.
    execution = new_execution()
    eid = execution.execution_id
    old = await create(store, execution, owner="old", release=False)
    await raw_conn.execute(
        "UPDATE strategy_executions SET lease_expires_at = now() WHERE execution_id = $1", eid
    )
    (taken,) = [
        e
        for e in await other_store.acquire_executions("new", lease_seconds=60, limit=1000)
        if e.execution_id == eid
    ]

    stale = await store.commit(
        [step(old, risk_events=[risk_event(eid, 1)], events=[outbox_event(execution, 1)])]
    )
    fresh = await other_store.commit([step(taken, events=[outbox_event(execution, 2)])])

    assert stale.lost == {eid}
    assert fresh.lost == frozenset()
    assert await _count(raw_conn, "risk", eid) == 0
    rows = await raw_conn.fetch("SELECT event_id FROM event_outbox WHERE execution_id = $1", eid)
    assert [r["event_id"] for r in rows] == [outbox_event(execution, 2).event_id]


async def test_a_commit_waiting_on_a_takeover_in_flight_checks_the_new_owner_and_writes_nothing(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # The fence is checked on the row as it is once locked, not as it was when the commit
    # started: a takeover that commits while the commit waits for the row wins.
    execution = new_execution()
    record = await create(store, execution)
    eid = execution.execution_id

    async with raw_conn.transaction():
        await raw_conn.execute(
            "UPDATE strategy_executions SET owner_id = 'w2', lease_epoch = lease_epoch + 1 "
            "WHERE execution_id = $1",
            eid,
        )
        waiting = asyncio.create_task(
            store.commit([step(record, state=busy_state(), events=[outbox_event(execution, 1)])])
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the row lock of the takeover

    outcome = await asyncio.wait_for(waiting, timeout=10)
    assert outcome.lost == {eid}
    loaded = await store.get_execution(eid)
    assert loaded is not None
    assert (loaded.owner_id, loaded.version, loaded.state) == ("w2", 1, record.state)
    assert await _count(raw_conn, "outbox", eid) == 0


async def test_every_write_bumps_the_version_even_without_state(store: PostgresStore) -> None:
    record = await create(store, new_execution())

    after = await commit_one(store, step(record))
    again = await commit_one(store, step(after))
    replayed = await store.commit([step(after)])  # the same version again

    assert (after.version, again.version) == (2, 3)
    assert again.state == record.state
    assert replayed.lost == {record.execution_id}


async def test_release_clears_the_lease_and_the_next_write_of_the_old_owner_is_lost(
    store: PostgresStore,
) -> None:
    record = await create(store, new_execution())

    released = await commit_one(store, step(record, release=True))
    late = await store.commit([step(released, fence=record.fence)])

    assert (released.owner_id, released.lease_expires_at) == (None, None)
    assert released.lease_epoch == record.lease_epoch
    assert late.lost == {record.execution_id}


async def test_next_intent_seq_never_goes_down(store: PostgresStore) -> None:
    execution = new_execution()
    record = await create(store, execution, intents=[intent(execution.execution_id, 1)])

    higher = await commit_one(store, step(record, next_intent_seq=9))
    lower = await commit_one(store, step(higher, next_intent_seq=4))

    assert (record.next_intent_seq, higher.next_intent_seq, lower.next_intent_seq) == (2, 9, 9)


async def test_state_keeps_decimals_to_the_last_digit(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    record = await create(store, new_execution())

    loaded = await commit_one(store, step(record, state=busy_state()))

    assert loaded.state.cash == Decimal("64875.30864197530864197530866")
    assert str(loaded.state.realized_pnl) == "-12.345678901234567890"
    assert str(loaded.state.unrealized_pnl) == "1234.5000"
    assert loaded.state.positions == {
        "AAPL": {
            "quantity": "200",
            "avg_cost": "175.123456789012345678901234567",
            "realized_pnl": "-0.00000001",
        }
    }
    assert dataclasses.replace(loaded.state, positions={}) == dataclasses.replace(
        busy_state(), positions={}
    )
    column = await raw_conn.fetchval(
        "SELECT cash::text FROM strategy_executions WHERE execution_id = $1", record.execution_id
    )
    assert column == "64875.30864197530864197530866"


# --- atomicity -----------------------------------------------------------------------------


async def test_an_intent_conflict_in_one_write_rolls_back_the_whole_batch(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    a, b = new_execution(), new_execution()
    ra = await create(store, a, intents=[intent(a.execution_id, 1)])
    rb = await create(store, b)
    fresh = new_execution()

    with pytest.raises(IntentConflictError):
        await store.commit(
            [
                creation(fresh, intents=[intent(fresh.execution_id, 1)]),
                step(rb, state=busy_state(), events=[outbox_event(b, 1)]),
                step(ra, intents=[intent(a.execution_id, 1, quantity="201")]),
            ],
            cursor=("oms-atomic", 5),
        )

    assert await store.get_execution(fresh.execution_id) is None
    assert await store.get_execution(rb.execution_id) == rb
    assert await store.get_execution(ra.execution_id) == ra
    assert await _count(raw_conn, "outbox", b.execution_id) == 0
    assert await store.get_report_cursor("oms-atomic") == 0


async def test_a_fill_conflict_rolls_back_the_whole_batch(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    a, b = new_execution(), new_execution()
    order = intent(a.execution_id, 1)
    ra = await create(store, a, intents=[order])
    first = fill(order, 1, quantity="10", price="175.5")
    ra = await commit_one(store, step(ra, fills=[FillRecord(fill=first, oms_seq=1)]))
    rb = await create(store, b)
    reused = dataclasses.replace(first, quantity=Decimal("20"))  # same order, same fill id

    with pytest.raises(FillConflictError) as caught:
        await store.commit(
            [
                step(ra, fills=[FillRecord(fill=reused, oms_seq=2)], state=busy_state()),
                step(rb, events=[outbox_event(b, 1)]),
            ]
        )

    assert caught.value.retryable is False
    assert await store.get_fills(a.execution_id) == [FillRecord(fill=first, oms_seq=1)]
    assert await store.get_execution(a.execution_id) == ra
    assert await _count(raw_conn, "outbox", b.execution_id) == 0


async def test_a_bad_row_rolls_back_the_creation_it_came_with(store: PostgresStore) -> None:
    execution = new_execution()
    bad = intent(execution.execution_id, 1, quantity="-1")  # CHECK (quantity > 0)

    with pytest.raises(StoreError) as caught:
        await store.commit([creation(execution, intents=[bad])])

    assert caught.value.retryable is False
    assert await store.get_execution(execution.execution_id) is None


async def test_non_finite_money_is_refused_before_it_reaches_numeric(store: PostgresStore) -> None:
    record = await create(store, new_execution())
    state = dataclasses.replace(record.state, cash=Decimal("NaN"))

    with pytest.raises(StoreError, match="non-finite"):
        await store.commit([step(record, state=state)])


# --- replays -------------------------------------------------------------------------------


async def test_replaying_every_kind_of_row_in_a_later_write_changes_nothing(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Arrange: one write carrying one row of each kind.
    execution = new_execution()
    eid = execution.execution_id
    order = intent(eid, 1)
    request = ControlRequestRecord(
        request_id=f"ctl-{uuid.uuid4()}",
        execution_id=eid,
        requested_by="user",
        action="pause",
        received_at=T0,
    )
    await store.record_control_request(request)
    record = await create(store, execution, intents=[order])
    the_fill = FillRecord(fill=fill(order, 1, quantity="200", price="175.5"), oms_seq=7)
    filled = OrderUpdate(
        client_order_id=order.client_order_id,
        status=OrderStatus.FILLED,
        filled_quantity=Decimal("200"),
        filled_price=Decimal("175.5"),
        oms_order_id="OMS-1",
        fees=Decimal("0.35"),
    )
    done = ControlCompletion(
        request_id=request.request_id,
        outcome=ControlOutcome.APPLIED,
        detail="paused",
        completed_at=T0,
    )
    rows = {
        "intents": [order],
        "order_updates": [filled],
        "fills": [the_fill],
        "risk_events": [risk_event(eid, 1)],
        "snapshots": [snapshot(eid, 1)],
        "events": [outbox_event(execution, 1)],
        "controls": [done],
    }
    first = await commit_one(store, step(record, **rows), cursor=("oms-replay", 7))
    before = {**await _everything(raw_conn, eid), "snaps": await _count(raw_conn, "snapshots", eid)}
    ack = OrderUpdate(
        client_order_id=order.client_order_id,
        status=OrderStatus.ACCEPTED,
        filled_quantity=Decimal(0),
    )

    # Act: the same rows again (a replayed report batch), plus a stale ack and cursor.
    second = await commit_one(
        store, step(first, **{**rows, "order_updates": [ack]}), cursor=("oms-replay", 3)
    )

    # Assert
    after = {**await _everything(raw_conn, eid), "snaps": await _count(raw_conn, "snapshots", eid)}
    assert second.version == 3
    assert before == after == {"orders": 1, "fills": 1, "risk": 1, "outbox": 1, "snaps": 1}
    (stored,) = await store.get_orders(eid)
    assert (stored.status, stored.filled_quantity, stored.oms_order_id) == (
        OrderStatus.FILLED,
        Decimal("200"),
        "OMS-1",
    )
    assert await store.get_fills(eid) == [the_fill]
    assert await store.get_report_cursor("oms-replay") == 7
    completed = await store.get_control_request(request.request_id)
    assert completed is not None
    assert (completed.outcome, completed.detail) == (ControlOutcome.APPLIED, "paused")


async def test_an_identical_fill_reconciled_then_reported_is_recorded_once(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    record = await create(store, execution, intents=[order])
    the_fill = fill(order, 1, quantity="5", price="10")

    record = await commit_one(store, step(record, fills=[FillRecord(fill=the_fill)]))
    await commit_one(store, step(record, fills=[FillRecord(fill=the_fill, oms_seq=99)]))

    assert await store.get_fills(execution.execution_id) == [FillRecord(fill=the_fill)]


async def test_two_orders_fills_with_the_same_fill_id_are_both_recorded(
    store: PostgresStore,
) -> None:
    # Issue 12 item 16: the OMS restarted and reused its fill ids on new orders.
    execution = new_execution()
    eid = execution.execution_id
    first, second = intent(eid, 1), intent(eid, 2, symbol="MSFT")
    record = await create(store, execution, intents=[first, second])
    fills = [
        FillRecord(fill=dataclasses.replace(fill(o, n, quantity="1", price="2"), fill_id="F-1"))
        for n, o in enumerate((first, second), start=1)
    ]

    await commit_one(store, step(record, fills=fills))

    assert await store.get_fills(eid) == fills


async def test_a_fill_for_an_order_that_is_not_the_writes_is_an_error_not_a_silent_drop(
    store: PostgresStore,
) -> None:
    mine, theirs = new_execution(), new_execution()
    their_order = intent(theirs.execution_id, 1)
    record = await create(store, mine)
    await create(store, theirs, intents=[their_order])
    ghost = intent(mine.execution_id, 5)  # never recorded

    for stray in (their_order, ghost):
        with pytest.raises(StoreError, match="no such order") as caught:
            await store.commit(
                [step(record, fills=[FillRecord(fill=fill(stray, 1, quantity="1", price="1"))])]
            )
        assert caught.value.retryable is False
    assert await store.get_fills(theirs.execution_id) == []
    assert await store.get_execution(mine.execution_id) == record


async def test_order_updates_never_leave_a_terminal_status_nor_lower_the_fill(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    record = await create(store, execution, intents=[order])

    def update(status: OrderStatus, quantity: str) -> OrderUpdate:
        return OrderUpdate(
            client_order_id=order.client_order_id,
            status=status,
            filled_quantity=Decimal(quantity),
        )

    accepted = update(OrderStatus.ACCEPTED, "0")
    record = await commit_one(store, step(record, order_updates=[accepted]))
    record = await commit_one(
        store,
        step(
            record,
            order_updates=[
                update(OrderStatus.PARTIALLY_FILLED, "120"),
                dataclasses.replace(update(OrderStatus.PARTIALLY_FILLED, "150"), fees=Decimal(1)),
            ],
        ),
    )
    record = await commit_one(
        store, step(record, order_updates=[update(OrderStatus.PARTIALLY_FILLED, "100")])
    )
    partial = (await store.get_orders(execution.execution_id))[0]
    filled = update(OrderStatus.FILLED, "200")
    record = await commit_one(store, step(record, order_updates=[filled]))
    await commit_one(store, step(record, order_updates=[update(OrderStatus.ACCEPTED, "200")]))
    final = (await store.get_orders(execution.execution_id))[0]

    assert (partial.status, partial.filled_quantity, partial.fees) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal("150"),
        Decimal(1),
    )
    assert (final.status, final.filled_quantity) == (OrderStatus.FILLED, Decimal("200"))


async def test_an_order_update_for_another_executions_order_is_skipped(
    store: PostgresStore,
) -> None:
    mine, theirs = new_execution(), new_execution()
    their_order = intent(theirs.execution_id, 1)
    record = await create(store, mine)
    await create(store, theirs, intents=[their_order])

    await commit_one(
        store,
        step(
            record,
            order_updates=[
                OrderUpdate(
                    client_order_id=their_order.client_order_id,
                    status=OrderStatus.CANCELLED,
                    filled_quantity=Decimal(0),
                )
            ],
        ),
    )

    (stored,) = await store.get_orders(theirs.execution_id)
    assert stored.status is OrderStatus.PENDING


async def test_a_control_completion_for_a_request_never_recorded_refuses_the_commit(
    store: PostgresStore,
) -> None:
    record = await create(store, new_execution())
    done = ControlCompletion(
        request_id="never-seen", outcome=ControlOutcome.APPLIED, detail="", completed_at=T0
    )

    with pytest.raises(StoreError, match="never recorded"):
        await store.commit([step(record, controls=[done], state=busy_state())])

    assert await store.get_execution(record.execution_id) == record


async def test_events_keep_their_commit_order_and_exact_decimals_in_the_outbox(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    record = await create(store, execution)
    events = [
        outbox_event(execution, n, price=Decimal("175.50"), quantity=200, tiny=Decimal("1E-12"))
        for n in range(5)
    ]

    record = await commit_one(store, step(record, events=events[:3]))
    await commit_one(store, step(record, events=events[3:]))

    rows = await raw_conn.fetch(
        "SELECT event_id, payload::text AS text FROM event_outbox WHERE execution_id = $1 "
        "ORDER BY seq",
        execution.execution_id,
    )
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]
    assert all('"price": 175.50' in r["text"] for r in rows)  # a JSON number, exactly
    assert all('"tiny": 0.000000000001' in r["text"] for r in rows)


# --- record_marks ----------------------------------------------------------------------------


async def test_marks_write_valuation_and_snapshot_only_where_fence_and_version_hold(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Arrange: one current, one a commit moved on, one taken by another owner.
    current, moved, taken = [await create(store, new_execution()) for _ in range(3)]
    moved_on = await commit_one(store, step(moved, state=busy_state()))
    await raw_conn.execute(
        "UPDATE strategy_executions SET owner_id = 'w2', lease_epoch = 2 WHERE execution_id = $1",
        taken.execution_id,
    )

    def mark(record: ExecutionRecord, pnl: str) -> MarkWrite:
        eid = record.execution_id
        return MarkWrite(
            execution_id=eid,
            fence=Fence(owner_id="w1", epoch=1),
            version=1,
            unrealized_pnl=Decimal(pnl),
            total_pnl=Decimal(pnl) + 1,
            snapshot=snapshot(eid, 1, total_pnl=pnl),
        )

    # Act
    unwritten = await store.record_marks(
        [mark(current, "10.01"), mark(moved, "20.02"), mark(taken, "30.03")]
    )

    # Assert
    assert unwritten == {moved.execution_id, taken.execution_id}
    marked = await store.get_execution(current.execution_id)
    assert marked is not None
    assert (marked.state.unrealized_pnl, marked.state.total_pnl) == (
        Decimal("10.01"),
        Decimal("11.01"),
    )
    assert marked.version == 1  # a mark is not a commit
    assert await store.get_execution(moved.execution_id) == moved_on  # newer, never overwritten
    assert [s.total_pnl for s in await store.get_snapshots(current.execution_id)] == [
        Decimal("10.01")
    ]
    assert await store.get_snapshots(moved.execution_id) == []
    assert await store.get_snapshots(taken.execution_id) == []
    assert await store.record_marks([]) == set()


async def test_fleet_pnl_sums_every_execution_ever_run(store: PostgresStore) -> None:
    before = await store.fleet_pnl()
    record = await create(store, new_execution())
    stopped = dataclasses.replace(
        busy_state(), status=ExecutionStatus.STOPPED, total_pnl=Decimal("-0.01")
    )
    await commit_one(store, step(record, state=stopped, release=True))
    other = await create(store, new_execution())
    await commit_one(store, step(other, state=busy_state()))

    after = await store.fleet_pnl()

    assert after - before == Decimal("-0.01") + busy_state().total_pnl


async def test_sells_of_recorded_fills_reproduce_cash_exactly(store: PostgresStore) -> None:
    execution = new_execution()
    buy = intent(execution.execution_id, 1, quantity="10", price="100")
    sell = dataclasses.replace(
        intent(execution.execution_id, 2, quantity="4", price="110"), side=Side.SELL
    )
    record = await create(store, execution, intents=[buy, sell])
    fills = [
        FillRecord(fill=fill(buy, 1, quantity="10", price="100.0001", fee="0.01")),
        FillRecord(fill=fill(sell, 2, quantity="4", price="110.1234", fee="0.02")),
    ]
    await commit_one(store, step(record, fills=fills))

    recorded: list[Fill] = [r.fill for r in await store.get_fills(execution.execution_id)]
    cash = sum(
        ((-f.notional if f.side == "BUY" else f.notional) - f.fee for f in recorded), Decimal(0)
    )

    assert cash == Decimal("-10") * Decimal("100.0001") + Decimal("4") * Decimal(
        "110.1234"
    ) - Decimal("0.03")
