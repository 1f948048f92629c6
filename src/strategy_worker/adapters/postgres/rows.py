"""Row <-> record mapping for the repository: the only place column names meet records."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from strategy_worker.domain.orders import Fill, OrderPurpose, OrderStatus, OrderType, Side
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    ControlOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionState,
    ExecutionStatus,
    FillRecord,
    OrderRecord,
    RiskEventRecord,
    Severity,
    SnapshotRecord,
    TradingState,
)

Row = Mapping[str, Any]


def num(value: Decimal) -> Decimal:
    """Guard a Decimal on its way to NUMERIC: PostgreSQL would store NaN and Infinity."""
    if not value.is_finite():
        raise StoreError(f"refusing to store non-finite number {value}")
    return value


def opt_num(value: Decimal | None) -> Decimal | None:
    return None if value is None else num(value)


def state_params(state: ExecutionState) -> tuple[Any, ...]:
    """The 15 parameters of an execution state, in STATE_SET order."""
    return (
        state.status.value,
        state.positions,
        num(state.cash),
        num(state.fees),
        num(state.realized_pnl),
        num(state.unrealized_pnl),
        num(state.total_pnl),
        state.total_trades,
        state.winning_trades,
        state.losing_trades,
        state.trading_state.value,
        state.trading_day,
        opt_num(state.day_start_equity),
        state.stop_reason,
        state.stopped_at,
    )


STATE_COLUMNS = (
    "status",
    "positions",
    "cash",
    "fees",
    "realized_pnl",
    "unrealized_pnl",
    "total_pnl",
    "total_trades",
    "winning_trades",
    "losing_trades",
    "trading_state",
    "trading_day",
    "day_start_equity",
    "stop_reason",
    "stopped_at",
)


def state_set_clause(first_param: int) -> str:
    """`status = $n, positions = $n+1, ...` for the STATE_COLUMNS."""
    return ", ".join(f"{col} = ${first_param + i}" for i, col in enumerate(STATE_COLUMNS))


def execution_from_row(row: Row) -> ExecutionRecord:
    state = ExecutionState(
        status=ExecutionStatus(row["status"]),
        positions=row["positions"],
        cash=row["cash"],
        fees=row["fees"],
        realized_pnl=row["realized_pnl"],
        unrealized_pnl=row["unrealized_pnl"],
        total_pnl=row["total_pnl"],
        total_trades=row["total_trades"],
        winning_trades=row["winning_trades"],
        losing_trades=row["losing_trades"],
        trading_state=TradingState(row["trading_state"]),
        trading_day=row["trading_day"],
        day_start_equity=row["day_start_equity"],
        stop_reason=row["stop_reason"],
        stopped_at=row["stopped_at"],
    )
    return ExecutionRecord(
        execution_id=row["execution_id"],
        strategy_id=row["strategy_id"],
        user_id=row["user_id"],
        approved_at=row["approved_at"],
        config=row["config"],
        initial_capital=row["initial_capital"],
        started_at=row["started_at"],
        state=state,
        next_intent_seq=row["next_intent_seq"],
        owner_id=row["owner_id"],
        lease_epoch=row["lease_epoch"],
        lease_expires_at=row["lease_expires_at"],
        heartbeat_at=row["heartbeat_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def order_from_row(row: Row) -> OrderRecord:
    return OrderRecord(
        order_id=row["order_id"],
        client_order_id=row["client_order_id"],
        execution_id=row["execution_id"],
        intent_seq=row["intent_seq"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        purpose=OrderPurpose(row["purpose"]),
        quantity=row["quantity"],
        price=row["price"],
        limit_price=row["limit_price"],
        status=OrderStatus(row["status"]),
        oms_order_id=row["oms_order_id"],
        filled_quantity=row["filled_quantity"],
        filled_price=row["filled_price"],
        fees=row["fees"],
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def fill_from_row(row: Row) -> FillRecord:
    fill = Fill(
        fill_id=row["fill_id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        quantity=row["quantity"],
        price=row["price"],
        fee=row["fee"],
        filled_at=row["filled_at"],
    )
    return FillRecord(fill=fill, oms_seq=row["oms_seq"])


def snapshot_from_row(row: Row) -> SnapshotRecord:
    return SnapshotRecord(
        snapshot_id=row["snapshot_id"],
        execution_id=row["execution_id"],
        taken_at=row["taken_at"],
        positions=row["positions"],
        total_value=row["total_value"],
        total_pnl=row["total_pnl"],
        unrealized_pnl=row["unrealized_pnl"],
        realized_pnl=row["realized_pnl"],
        cash=row["cash"],
    )


def risk_event_from_row(row: Row) -> RiskEventRecord:
    return RiskEventRecord(
        event_id=row["event_id"],
        execution_id=row["execution_id"],
        event_type=row["event_type"],
        severity=Severity(row["severity"]),
        description=row["description"],
        action_taken=row["action_taken"],
        occurred_at=row["occurred_at"],
        details=row["details"],
    )


def control_from_row(row: Row) -> ControlRequestRecord:
    return ControlRequestRecord(
        request_id=row["request_id"],
        execution_id=row["execution_id"],
        requested_by=row["requested_by"],
        action=row["action"],
        payload=row["payload"],
        outcome=ControlOutcome(row["outcome"]),
        detail=row["detail"],
        received_at=row["received_at"],
        completed_at=row["completed_at"],
    )
