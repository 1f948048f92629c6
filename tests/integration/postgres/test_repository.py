"""PostgresStore against the real PostgreSQL: every table round-trips exactly, the reads
return what the commits wrote, and the schema refuses what the store never writes."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    ControlOutcome,
    ControlRequestRecord,
    ExecutionStatus,
    FillRecord,
    LoadedExecution,
    OrderUpdate,
    RiskEventRecord,
    Severity,
    SnapshotRecord,
    order_id_for,
)

from .factories import (
    CONFIG,
    T0,
    busy_state,
    commit_one,
    create,
    fill,
    intent,
    new_execution,
    snapshot,
    step,
)

pytestmark = pytest.mark.integration


async def test_created_execution_round_trips_every_column_exactly(store: PostgresStore) -> None:
    execution = new_execution()

    loaded = await create(store, execution)

    assert loaded.strategy_id == execution.strategy_id
    assert loaded.user_id == execution.user_id
    assert loaded.approved_at == execution.approved_at
    assert loaded.started_at == execution.started_at
    assert loaded.initial_capital == Decimal("100000.00")
    assert loaded.state == execution.state
    assert (loaded.next_intent_seq, loaded.version) == (1, 1)
    # JSONB: Decimals were written as strings, exactly.
    assert loaded.config["allocation"] == {"AAPL": "0.35", "MSFT": "0.35", "GOOGL": "0.30"}
    assert loaded.config["initial_capital"] == "100000.00"
    assert loaded.config["entry_rules"] == CONFIG["entry_rules"]


async def test_a_second_execution_for_one_message_key_is_refused_by_the_database(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = await create(store, new_execution())

    with pytest.raises(asyncpg.UniqueViolationError):
        await raw_conn.execute(
            "INSERT INTO strategy_executions (execution_id, strategy_id, user_id, approved_at, "
            "config, initial_capital, cash, started_at) "
            "SELECT $1, strategy_id, user_id, approved_at, config, initial_capital, cash, "
            "started_at FROM strategy_executions WHERE execution_id = $2",
            uuid.uuid4(),
            execution.execution_id,
        )


async def test_a_second_order_with_one_client_order_id_is_refused_by_the_database(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    first = intent(execution.execution_id, 1)
    await create(store, execution, intents=[first])

    with pytest.raises(asyncpg.UniqueViolationError):
        await raw_conn.execute(
            "INSERT INTO execution_orders (order_id, execution_id, client_order_id, intent_seq, "
            "symbol, side, order_type, purpose, quantity, price) "
            "VALUES ($1, $2, $3, 99, 'AAPL', 'BUY', 'MARKET', 'INITIAL', 1, 1)",
            uuid.uuid4(),
            execution.execution_id,
            first.client_order_id,
        )


async def test_a_second_fill_with_one_order_and_fill_id_is_refused_by_the_database(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    record = await create(store, execution, intents=[order])
    the_fill = fill(order, 1, quantity="1", price="1")
    await commit_one(store, step(record, fills=[FillRecord(fill=the_fill)]))

    with pytest.raises(asyncpg.UniqueViolationError):
        await raw_conn.execute(
            "INSERT INTO execution_fills (fill_id, client_order_id, symbol, side, quantity, "
            "price, filled_at) VALUES ($1, $2, 'AAPL', 'BUY', 2, 2, now())",
            the_fill.fill_id,
            order.client_order_id,
        )


async def test_orders_and_fills_round_trip_exactly(store: PostgresStore) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    record = await create(store, execution, intents=[order])
    f1 = fill(order, 1, quantity="120", price="175.4999", fee="0.1234567")
    f2 = fill(order, 2, quantity="80", price="175.5123", fee="0.0765433")
    ack = OrderUpdate(
        client_order_id=order.client_order_id,
        status=OrderStatus.ACCEPTED,
        filled_quantity=Decimal(0),
        oms_order_id="OMS-1",
    )
    done = OrderUpdate(
        client_order_id=order.client_order_id,
        status=OrderStatus.FILLED,
        filled_quantity=Decimal("200"),
        filled_price=Decimal("175.50486"),
        fees=Decimal("0.2000000"),
    )

    await commit_one(
        store,
        step(
            record,
            order_updates=[ack, done],
            fills=[FillRecord(fill=f2, oms_seq=12), FillRecord(fill=f1, oms_seq=11)],
        ),
    )

    (stored,) = await store.get_orders(execution.execution_id)
    assert stored.intent == order
    assert stored.order_id == order_id_for(order.client_order_id)
    assert (stored.status, stored.oms_order_id) == (OrderStatus.FILLED, "OMS-1")
    assert str(stored.filled_price) == "175.50486"
    assert str(stored.fees) == "0.2000000"
    assert not stored.is_open
    assert await store.get_fills(execution.execution_id) == [  # as they happened
        FillRecord(fill=f1, oms_seq=11),
        FillRecord(fill=f2, oms_seq=12),
    ]


async def test_snapshots_and_risk_events_round_trip_exactly(store: PostgresStore) -> None:
    execution = new_execution()
    eid = execution.execution_id
    record = await create(store, execution)
    snapshots = [snapshot(eid, n, total_pnl=f"12.{n}456789") for n in range(3)]
    event = RiskEventRecord(
        event_id=uuid.uuid4(),
        execution_id=eid,
        event_type="POSITION_SIZE_WARNING",
        severity=Severity.WARNING,
        description="AAPL at 24.5% of the portfolio (limit 30%)",
        action_taken="none",
        occurred_at=T0,
        details={"symbol": "AAPL", "ratio": Decimal("0.245")},
    )

    await commit_one(store, step(record, snapshots=snapshots, risk_events=[event]))

    assert await store.get_snapshots(eid) == [_as_loaded(s) for s in reversed(snapshots)]
    assert await store.get_snapshots(eid, limit=1) == [_as_loaded(snapshots[-1])]
    assert await store.get_risk_events(eid) == [
        dataclasses.replace(event, details={"symbol": "AAPL", "ratio": "0.245"})
    ]


def _as_loaded(snapshot: SnapshotRecord) -> SnapshotRecord:
    """A snapshot as it comes back: JSONB Decimals are strings."""
    positions = {
        symbol: {k: str(v) for k, v in values.items()}
        for symbol, values in snapshot.positions.items()
    }
    return dataclasses.replace(snapshot, positions=positions)


async def test_load_executions_returns_each_with_its_own_orders_and_fills_in_order(
    store: PostgresStore,
) -> None:
    # Arrange: two executions with orders and fills, one without any, one unknown id.
    loaded_expected: dict[uuid.UUID, tuple[list[str], list[FillRecord]]] = {}
    ids = []
    for orders_count in (2, 1, 0):
        execution = new_execution()
        eid = execution.execution_id
        orders = [intent(eid, seq) for seq in range(1, orders_count + 1)]
        record = await create(store, execution, intents=orders)
        fills = [FillRecord(fill=fill(o, n, quantity="1", price="2")) for n, o in enumerate(orders)]
        await commit_one(store, step(record, fills=fills))
        loaded_expected[eid] = ([o.client_order_id for o in orders], fills)
        ids.append(eid)
    wanted = [ids[2], uuid.uuid4(), ids[0], ids[1]]

    # Act
    loaded = await store.load_executions(wanted)

    # Assert
    assert [e.record.execution_id for e in loaded] == [ids[2], ids[0], ids[1]]
    for entry in loaded:
        assert isinstance(entry, LoadedExecution)
        orders, fills = loaded_expected[entry.record.execution_id]
        assert [o.client_order_id for o in entry.orders] == orders
        assert list(entry.fills) == fills
        assert entry.record.version == 2
    assert await store.load_executions([]) == []


async def test_running_strategies_names_the_running_execution_of_each_strategy(
    store: PostgresStore,
) -> None:
    running, paused, stopped = new_execution(), new_execution(), new_execution()
    await create(store, running)
    paused_record = await create(store, paused)
    await commit_one(store, step(paused_record, state=busy_state()))
    stopped_record = await create(store, stopped)
    stopped_state = dataclasses.replace(
        stopped.state, status=ExecutionStatus.STOPPED, stop_reason="user", stopped_at=T0
    )
    await commit_one(store, step(stopped_record, state=stopped_state, release=True))

    found = await store.running_strategies(
        [running.strategy_id, paused.strategy_id, stopped.strategy_id, uuid.uuid4()]
    )

    assert found == {
        running.strategy_id: running.execution_id,
        paused.strategy_id: paused.execution_id,  # busy_state() is PAUSED
    }
    assert await store.running_strategies([]) == {}


async def test_existing_executions_returns_only_the_ids_that_exist(store: PostgresStore) -> None:
    known = [(await create(store, new_execution())).execution_id for _ in range(2)]
    unknown = uuid.uuid4()

    assert await store.existing_executions([*known, unknown]) == set(known)
    assert await store.existing_executions([]) == set()


async def test_enumerations_outside_the_spec_are_refused_by_check_constraints(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = await create(store, new_execution())

    with pytest.raises(asyncpg.CheckViolationError, match="severity"):
        await raw_conn.execute(
            "INSERT INTO risk_events (event_id, execution_id, event_type, severity, description, "
            "occurred_at) VALUES ($1, $2, 'X', 'FATAL', '', now())",
            uuid.uuid4(),
            execution.execution_id,
        )
    with pytest.raises(asyncpg.CheckViolationError, match="status"):
        await raw_conn.execute(
            "UPDATE strategy_executions SET status = 'running' WHERE execution_id = $1",
            execution.execution_id,
        )
    with pytest.raises(asyncpg.CheckViolationError, match="published"):
        await raw_conn.execute(
            "INSERT INTO event_outbox (event_id, execution_id, user_id, key, event_type, "
            "payload, published_seq) VALUES ($1, $2, $2, 'k', 't', '{}', 1)",
            uuid.uuid4(),
            execution.execution_id,
        )


async def test_control_request_is_recorded_once_and_completed(store: PostgresStore) -> None:
    request = ControlRequestRecord(
        request_id=f"ctl-{uuid.uuid4()}",
        execution_id=uuid.uuid4(),
        requested_by="660e8400-e29b-41d4-a716-446655440000",
        action="stop",
        received_at=T0,
        payload={"reason": "user request", "max_loss": Decimal("100.50")},
    )

    first = await store.record_control_request(request)
    replay = await store.record_control_request(request)
    pending = await store.list_pending_control_requests([request.execution_id or uuid.uuid4()])
    await store.complete_control_request(
        request.request_id, ControlOutcome.REFUSED, detail="unknown execution", completed_at=T0
    )
    loaded = await store.get_control_request(request.request_id)

    assert (first, replay) == (True, False)
    assert [p.request_id for p in pending] == [request.request_id]
    assert loaded is not None
    assert loaded.outcome is ControlOutcome.REFUSED
    assert (loaded.detail, loaded.completed_at) == ("unknown execution", T0)
    assert loaded.payload == {"reason": "user request", "max_loss": "100.50"}
    with pytest.raises(StoreError, match="never recorded"):
        await store.complete_control_request(
            "never-seen", ControlOutcome.APPLIED, detail="", completed_at=T0
        )


async def test_report_cursor_starts_at_zero_and_never_moves_back(store: PostgresStore) -> None:
    name = f"oms-{uuid.uuid4().hex[:8]}"

    start = await store.get_report_cursor(name)
    await store.set_report_cursor(name, 42)
    await store.set_report_cursor(name, 7)
    await store.commit([], cursor=(name, 9))

    assert start == 0
    assert await store.get_report_cursor(name) == 42


async def test_ping_answers_true(store: PostgresStore) -> None:
    assert await store.ping() is True
