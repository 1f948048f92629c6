"""Row <-> record mapping for the repository: the only place column names meet records
(rows read back into records; records of a batch turned into the typed arrays of `unnest`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.domain.orders import (
    Fill,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.errors import StoreError
from strategy_worker.messages import encode_json
from strategy_worker.store import (
    ControlCompletion,
    ControlOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionState,
    ExecutionStatus,
    FillRecord,
    OrderRecord,
    OrderUpdate,
    OutboxEvent,
    OutboxRow,
    RiskEventRecord,
    Severity,
    SnapshotRecord,
    TradingState,
    order_id_for,
)

Row = Mapping[str, Any]


def num(value: Decimal) -> Decimal:
    """Guard a Decimal on its way to NUMERIC: PostgreSQL would store NaN and Infinity."""
    if not value.is_finite():
        raise StoreError(f"refusing to store non-finite number {value}")
    return value


def opt_num(value: Decimal | None) -> Decimal | None:
    return None if value is None else num(value)


def state_columns(states: Sequence[ExecutionState | None]) -> list[list[Any]]:
    """The 15 state arrays of a batch (status, positions as JSON text, cash, ... stopped_at,
    in the order of the SQL's unnest); a None state is a row of NULLs."""
    rows = [_NO_STATE if s is None else _state_row(s) for s in states]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 15


_NO_STATE: tuple[Any, ...] = (None,) * 15


def _state_row(state: ExecutionState) -> tuple[Any, ...]:
    return (
        state.status.value,
        jsoncodec.dumps(state.positions),
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


def intent_columns(intents: Sequence[OrderIntent]) -> list[list[Any]]:
    """INSERT_INTENTS' arrays."""
    return [
        [order_id_for(i.client_order_id) for i in intents],
        [i.execution_id for i in intents],
        [i.client_order_id for i in intents],
        [i.intent_seq for i in intents],
        [i.symbol for i in intents],
        [i.side.value for i in intents],
        [i.order_type.value for i in intents],
        [i.purpose.value for i in intents],
        [num(i.quantity) for i in intents],
        [num(i.price) for i in intents],
        [opt_num(i.limit_price) for i in intents],
    ]


def update_columns(updates: Sequence[tuple[uuid.UUID, OrderUpdate]]) -> list[list[Any]]:
    """APPLY_ORDER_UPDATES' arrays, each update with its write's execution id."""
    return [
        [e for e, _ in updates],
        [u.client_order_id for _, u in updates],
        [u.status.value for _, u in updates],
        [num(u.filled_quantity) for _, u in updates],
        [opt_num(u.filled_price) for _, u in updates],
        [u.oms_order_id for _, u in updates],
        [opt_num(u.fees) for _, u in updates],
        [u.reason for _, u in updates],
    ]


def fill_columns(fills: Sequence[tuple[uuid.UUID, FillRecord]]) -> list[list[Any]]:
    """INSERT_FILLS' arrays, each fill with its write's execution id."""
    return [
        [e for e, _ in fills],
        [r.fill.client_order_id for _, r in fills],
        [r.fill.fill_id for _, r in fills],
        [r.fill.symbol for _, r in fills],
        [r.fill.side.value for _, r in fills],
        [num(r.fill.quantity) for _, r in fills],
        [num(r.fill.price) for _, r in fills],
        [num(r.fill.fee) for _, r in fills],
        [r.fill.filled_at for _, r in fills],
        [r.oms_seq for _, r in fills],
    ]


def risk_event_columns(events: Sequence[RiskEventRecord]) -> list[list[Any]]:
    """The risk-event arrays of INSERT_HISTORY."""
    return [
        [e.event_id for e in events],
        [e.execution_id for e in events],
        [e.event_type for e in events],
        [e.severity.value for e in events],
        [e.description for e in events],
        [e.action_taken for e in events],
        [jsoncodec.dumps(e.details) for e in events],
        [e.occurred_at for e in events],
    ]


def snapshot_columns(snapshots: Sequence[SnapshotRecord]) -> list[list[Any]]:
    """The snapshot arrays of INSERT_HISTORY and RECORD_MARKS."""
    return [
        [s.snapshot_id for s in snapshots],
        [s.execution_id for s in snapshots],
        [s.taken_at for s in snapshots],
        [jsoncodec.dumps(s.positions) for s in snapshots],
        [num(s.total_value) for s in snapshots],
        [num(s.total_pnl) for s in snapshots],
        [num(s.unrealized_pnl) for s in snapshots],
        [num(s.realized_pnl) for s in snapshots],
        [opt_num(s.cash) for s in snapshots],
    ]


def outbox_columns(events: Sequence[OutboxEvent]) -> list[list[Any]]:
    """The outbox arrays of INSERT_HISTORY. The payload is the wire JSON (`encode_json`:
    Decimals as exact JSON numbers, which JSONB keeps digit for digit), not the store's
    Decimals-as-strings encoding: the relay publishes it as it reads it back."""
    return [
        [e.event_id for e in events],
        [e.execution_id for e in events],
        [e.user_id for e in events],
        [e.key for e in events],
        [e.event_type for e in events],
        [_wire_json(e.payload) for e in events],
    ]


def _wire_json(payload: Mapping[str, Any]) -> str:
    try:
        return encode_json(payload)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"refusing to store an event payload that is not JSON: {exc}") from exc


def control_columns(completions: Sequence[ControlCompletion]) -> list[list[Any]]:
    """COMPLETE_CONTROL_REQUESTS' arrays."""
    return [
        [c.request_id for c in completions],
        [c.outcome.value for c in completions],
        [c.detail for c in completions],
        [c.completed_at for c in completions],
    ]


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
        version=row["state_version"],
        ledger_exposure=row["ledger_exposure"],
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
        **_protective_columns(row),
    )


def _protective_columns(row: Row) -> dict[str, Any]:
    """The columns of migration 005 (stop, trail, group, reduce-only) as OrderRecord fields;
    a row read without them (a narrower SELECT) is a plain MARKET/LIMIT order."""
    get = row.get
    trail: Trail | None = None
    if row["order_type"] == OrderType.TRAILING_STOP.value:
        trail = Trail(
            pct=get("trail_pct"),
            amount=get("trail_amount"),
            limit_offset=get("trail_limit_offset"),
            reference_price=get("trail_reference"),
        )
    return {
        "stop_price": get("stop_price"),
        "trail": trail,
        "parent_client_order_id": get("parent_client_order_id") or "",
        "oco_group_id": get("oco_group_id") or "",
        "reduce_only": bool(get("reduce_only") or False),
    }


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


def outbox_from_row(row: Row) -> OutboxRow:
    """A claimed event; the payload arrives as the committed JSON text (CLAIM_OUTBOX), kept
    as `encoded` so the relay publishes it without encoding it again."""
    text = row["payload"]
    event = OutboxEvent(
        event_id=row["event_id"],
        execution_id=row["execution_id"],
        user_id=row["user_id"],
        key=row["key"],
        event_type=row["event_type"],
        payload=jsoncodec.loads(text) if isinstance(text, str) else text,
        encoded=text if isinstance(text, str) else None,
    )
    return OutboxRow(seq=row["seq"], event=event, created_at=row["created_at"])
