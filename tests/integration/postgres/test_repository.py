"""PostgresStore against the real PostgreSQL: every table round-trips, exactly."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.orders import OrderStatus, Side
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    ControlOutcome,
    ControlRequestRecord,
    ExecutionStatus,
    FillRecord,
    IntentConflictError,
    OrderUpdate,
    RiskEventRecord,
    Severity,
    SnapshotRecord,
    StateWrite,
    order_id_for,
)

from .factories import CONFIG, T0, busy_state, fill, intent, new_execution

pytestmark = pytest.mark.integration


async def test_create_execution_round_trips_every_column_exactly(store: PostgresStore) -> None:
    execution = new_execution()

    created = await store.create_execution(execution)
    loaded = await store.get_execution(execution.execution_id)

    assert created is True
    assert loaded is not None
    assert loaded.strategy_id == execution.strategy_id
    assert loaded.user_id == execution.user_id
    assert loaded.approved_at == execution.approved_at
    assert loaded.started_at == execution.started_at
    assert loaded.initial_capital == Decimal("100000.00")
    assert loaded.state == execution.state
    assert loaded.next_intent_seq == 1
    assert loaded.owner_id is None
    assert loaded.fence is None
    # JSONB: Decimals were written as strings, exactly.
    assert loaded.config["allocation"] == {"AAPL": "0.35", "MSFT": "0.35", "GOOGL": "0.30"}
    assert loaded.config["initial_capital"] == "100000.00"
    assert loaded.config["entry_rules"] == CONFIG["entry_rules"]


async def test_update_execution_state_keeps_decimals_to_the_last_digit(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    await store.create_execution(execution)
    state = busy_state()

    await store.update_execution_state(execution.execution_id, state, fence=None)
    loaded = await store.get_execution(execution.execution_id)

    assert loaded is not None
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
    assert loaded.state.trading_state == state.trading_state
    assert loaded.state.trading_day == state.trading_day
    assert loaded.state.day_start_equity == state.day_start_equity
    assert (loaded.state.total_trades, loaded.state.winning_trades) == (7, 4)
    column = await raw_conn.fetchval(
        "SELECT cash::text FROM strategy_executions WHERE execution_id = $1",
        execution.execution_id,
    )
    assert column == "64875.30864197530864197530866"


async def test_second_execution_for_the_same_message_is_not_created(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    first_intents = [intent(execution.execution_id, 1)]

    first = await store.create_execution(execution, first_intents)
    again = await store.create_execution(
        execution, [intent(execution.execution_id, 1, quantity="9")]
    )

    assert (first, again) == (True, False)
    rows = await raw_conn.fetchval(
        "SELECT count(*) FROM strategy_executions WHERE strategy_id = $1", execution.strategy_id
    )
    orders = await store.get_orders(execution.execution_id)
    assert rows == 1
    assert [o.quantity for o in orders] == [Decimal("200")]


async def test_same_strategy_and_timestamp_under_another_id_is_refused_by_the_message_key(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    await store.create_execution(execution)
    same_message = new_execution(strategy_id=execution.strategy_id, approved_at=T0)
    impostor = dataclasses.replace(same_message, execution_id=uuid.uuid4())

    created = await store.create_execution(impostor)

    assert created is False
    assert await store.get_execution(impostor.execution_id) is None
    with pytest.raises(asyncpg.UniqueViolationError):
        await raw_conn.execute(
            "INSERT INTO strategy_executions (execution_id, strategy_id, user_id, approved_at, "
            "config, initial_capital, cash, started_at) "
            "SELECT $1, strategy_id, user_id, approved_at, config, initial_capital, cash, "
            "started_at FROM strategy_executions WHERE execution_id = $2",
            uuid.uuid4(),
            execution.execution_id,
        )


async def test_create_execution_records_initial_intents_in_the_same_transaction(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    intents = [intent(execution.execution_id, 1), intent(execution.execution_id, 2, symbol="MSFT")]

    await store.create_execution(execution, intents, owner_id="w1", lease_seconds=30)
    loaded = await store.get_execution(execution.execution_id)
    orders = await store.get_orders(execution.execution_id)

    assert loaded is not None
    assert loaded.next_intent_seq == 3
    assert loaded.owner_id == "w1"
    assert loaded.lease_epoch == 1
    assert [o.intent for o in orders] == intents
    assert all(o.status is OrderStatus.PENDING for o in orders)
    assert orders[0].order_id == order_id_for(intents[0].client_order_id)


async def test_create_execution_with_a_bad_intent_writes_nothing(store: PostgresStore) -> None:
    execution = new_execution()
    bad = intent(execution.execution_id, 1, quantity="-1")  # CHECK (quantity > 0)

    with pytest.raises(StoreError):
        await store.create_execution(execution, [bad])

    assert await store.get_execution(execution.execution_id) is None


async def test_record_intents_advances_seq_and_state_atomically(store: PostgresStore) -> None:
    execution = new_execution()
    await store.create_execution(execution)
    intents = [intent(execution.execution_id, 1), intent(execution.execution_id, 2)]

    new = await store.record_intents(
        execution.execution_id, intents, next_intent_seq=3, state=busy_state(), fence=None
    )
    retried = await store.record_intents(
        execution.execution_id, intents, next_intent_seq=3, fence=None
    )
    loaded = await store.get_execution(execution.execution_id)

    assert new == [i.client_order_id for i in intents]
    assert retried == []
    assert loaded is not None
    assert loaded.next_intent_seq == 3
    assert loaded.state == dataclasses.replace(busy_state(), positions=loaded.state.positions)
    assert loaded.state.positions["AAPL"]["avg_cost"] == "175.123456789012345678901234567"


async def test_reusing_a_client_order_id_for_another_order_is_an_intent_conflict(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    await store.create_execution(execution, [intent(execution.execution_id, 1)])

    with pytest.raises(IntentConflictError):
        await store.record_intents(
            execution.execution_id,
            [intent(execution.execution_id, 1, quantity="201")],
            next_intent_seq=2,
            fence=None,
        )


async def test_second_order_with_the_same_client_order_id_is_refused_by_the_database(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    first = intent(execution.execution_id, 1)
    await store.create_execution(execution, [first])

    with pytest.raises(asyncpg.UniqueViolationError):
        await raw_conn.execute(
            "INSERT INTO execution_orders (order_id, execution_id, client_order_id, intent_seq, "
            "symbol, side, order_type, purpose, quantity, price) "
            "VALUES ($1, $2, $3, 99, 'AAPL', 'BUY', 'MARKET', 'INITIAL', 1, 1)",
            uuid.uuid4(),
            execution.execution_id,
            first.client_order_id,
        )


async def test_order_updates_and_fills_round_trip_and_replays_change_nothing(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    await store.create_execution(execution, [order])
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
    state = busy_state()

    first = await store.record_order_reports(
        updates=[ack, done],
        fills=[FillRecord(fill=f1, oms_seq=11), FillRecord(fill=f2, oms_seq=12)],
        states=[StateWrite(execution_id=execution.execution_id, state=state, fence=None)],
        cursor=("oms", 12),
    )
    replay = await store.record_order_reports(
        updates=[ack], fills=[FillRecord(fill=f1, oms_seq=11)], cursor=("oms", 11)
    )

    assert first.new_fill_ids == {f1.fill_id, f2.fill_id}
    assert first.applied_updates == {order.client_order_id}
    assert replay.new_fill_ids == frozenset()
    assert replay.applied_updates == frozenset()  # FILLED never goes back to ACCEPTED
    stored = await store.get_order(order.client_order_id)
    assert stored is not None
    assert (stored.status, stored.oms_order_id) == (OrderStatus.FILLED, "OMS-1")
    assert str(stored.filled_price) == "175.50486"
    assert str(stored.fees) == "0.2000000"
    assert await store.get_fills(execution.execution_id) == [
        FillRecord(fill=f1, oms_seq=11),
        FillRecord(fill=f2, oms_seq=12),
    ]
    assert await store.get_report_cursor("oms") == 12
    assert await store.list_open_orders(execution_id=execution.execution_id) == []


async def test_pnl_figures_are_reproducible_from_recorded_fills(store: PostgresStore) -> None:
    execution = new_execution()
    buy = intent(execution.execution_id, 1, quantity="10", price="100")
    sell = intent(execution.execution_id, 2, quantity="4", price="110")
    sell = dataclasses.replace(sell, side=Side.SELL)
    await store.create_execution(execution, [buy, sell])
    fills = [
        FillRecord(fill=fill(buy, 1, quantity="10", price="100.0001", fee="0.01")),
        FillRecord(fill=fill(sell, 2, quantity="4", price="110.1234", fee="0.02")),
    ]
    await store.record_order_reports(fills=fills)

    recorded = [r.fill for r in await store.get_fills(execution.execution_id)]
    cash = sum(
        ((-f.notional if f.side == "BUY" else f.notional) - f.fee for f in recorded), Decimal(0)
    )

    assert cash == Decimal("-10") * Decimal("100.0001") + Decimal("4") * Decimal("110.1234") - (
        Decimal("0.03")
    )


async def test_a_fill_for_an_unknown_order_is_an_error_not_a_silent_drop(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    ghost = intent(execution.execution_id, 1)  # never recorded

    with pytest.raises(StoreError, match="23503"):
        await store.record_order_reports(
            fills=[FillRecord(fill=fill(ghost, 1, quantity="1", price="1"))]
        )


async def test_snapshots_and_risk_events_round_trip_and_ignore_repeats(
    store: PostgresStore,
) -> None:
    execution = new_execution()
    await store.create_execution(execution)
    snapshots = [
        SnapshotRecord(
            snapshot_id=uuid.uuid4(),
            execution_id=execution.execution_id,
            taken_at=T0 + timedelta(minutes=n),
            positions={"AAPL": {"quantity": Decimal("200"), "price": Decimal("175.5001")}},
            total_value=Decimal("100012.3456789"),
            total_pnl=Decimal(f"12.{n}456789"),
            unrealized_pnl=Decimal("-0.0000001"),
            realized_pnl=Decimal("3.14"),
            cash=Decimal("64900.00"),
        )
        for n in range(3)
    ]
    event = RiskEventRecord(
        event_id=uuid.uuid4(),
        execution_id=execution.execution_id,
        event_type="POSITION_SIZE_WARNING",
        severity=Severity.WARNING,
        description="AAPL at 24.5% of the portfolio (limit 30%)",
        action_taken="none",
        occurred_at=T0,
        details={"symbol": "AAPL", "ratio": Decimal("0.245")},
    )

    await store.insert_snapshots(snapshots)
    await store.insert_snapshots(snapshots[:1])
    await store.insert_risk_events([event])
    await store.insert_risk_events([event])

    assert await store.get_snapshots(execution.execution_id) == [
        _as_loaded(s) for s in reversed(snapshots)
    ]
    assert await store.get_risk_events(execution.execution_id) == [
        dataclasses.replace(event, details={"symbol": "AAPL", "ratio": "0.245"})
    ]


def _as_loaded(snapshot: SnapshotRecord) -> SnapshotRecord:
    """A snapshot as it comes back: JSONB Decimals are strings."""
    positions = {
        symbol: {k: str(v) for k, v in values.items()}
        for symbol, values in snapshot.positions.items()
    }
    return dataclasses.replace(snapshot, positions=positions)


async def test_enumerations_outside_the_spec_are_refused_by_check_constraints(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    await store.create_execution(execution)

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
    await store.complete_control_request(
        request.request_id, ControlOutcome.APPLIED, detail="stopped", completed_at=T0
    )
    loaded = await store.get_control_request(request.request_id)

    assert (first, replay) == (True, False)
    assert loaded is not None
    assert loaded.outcome is ControlOutcome.APPLIED
    assert (loaded.detail, loaded.completed_at) == ("stopped", T0)
    assert loaded.payload == {"reason": "user request", "max_loss": "100.50"}


async def test_report_cursor_starts_at_zero_and_never_moves_back(store: PostgresStore) -> None:
    name = f"oms-{uuid.uuid4().hex[:8]}"

    start = await store.get_report_cursor(name)
    await store.set_report_cursor(name, 42)
    await store.set_report_cursor(name, 7)

    assert start == 0
    assert await store.get_report_cursor(name) == 42


async def test_list_executions_by_status_filters_status_and_owner(store: PostgresStore) -> None:
    running, stopped = new_execution(), new_execution()
    await store.create_execution(running, owner_id="w-list", lease_seconds=30)
    await store.create_execution(stopped)
    stopped_state = dataclasses.replace(
        stopped.state, status=ExecutionStatus.STOPPED, stop_reason="user", stopped_at=T0
    )
    await store.update_execution_state(stopped.execution_id, stopped_state, fence=None)

    mine = await store.list_executions_by_status([ExecutionStatus.ACTIVE], owner_id="w-list")
    done = await store.list_executions_by_status([ExecutionStatus.STOPPED])

    assert [e.execution_id for e in mine] == [running.execution_id]
    assert stopped.execution_id in {e.execution_id for e in done}
    assert running.execution_id not in {e.execution_id for e in done}


async def test_non_finite_money_is_refused_before_it_reaches_numeric(store: PostgresStore) -> None:
    execution = new_execution()
    await store.create_execution(execution)
    state = dataclasses.replace(execution.state, cash=Decimal("NaN"))

    with pytest.raises(StoreError, match="non-finite"):
        await store.update_execution_state(execution.execution_id, state, fence=None)


async def test_ping_answers_true(store: PostgresStore) -> None:
    assert await store.ping() is True
