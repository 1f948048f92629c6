"""Builders of store records and writes for the PostgreSQL tests (unique ids every call)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from strategy_worker.domain.ids import client_order_id, execution_id_for
from strategy_worker.domain.orders import Fill, OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    FIRST_VERSION,
    ExecutionRecord,
    ExecutionState,
    ExecutionStatus,
    ExecutionWrite,
    Fence,
    NewExecution,
    OutboxEvent,
    RiskEventRecord,
    Severity,
    SnapshotRecord,
    Store,
    TradingState,
)

T0 = datetime(2024, 1, 1, 14, 30, tzinfo=UTC)

CONFIG = {
    "name": "Tech Growth Strategy",
    "type": "MOMENTUM",
    "symbols": ["AAPL", "MSFT", "GOOGL"],
    "allocation": {"AAPL": Decimal("0.35"), "MSFT": Decimal("0.35"), "GOOGL": Decimal("0.30")},
    "initial_capital": Decimal("100000.00"),
    "risk_params": {"max_position_size": Decimal("0.30"), "stop_loss_pct": Decimal("0.05")},
    "entry_rules": {"indicators": ["RSI", "MACD"], "rsi_threshold": 40},
}


def new_execution(
    *, strategy_id: uuid.UUID | None = None, approved_at: datetime = T0
) -> NewExecution:
    strategy = strategy_id or uuid.uuid4()
    capital = Decimal("100000.00")
    return NewExecution(
        execution_id=execution_id_for(strategy, approved_at),
        strategy_id=strategy,
        user_id=uuid.uuid4(),
        approved_at=approved_at,
        config=CONFIG,
        initial_capital=capital,
        started_at=approved_at + timedelta(seconds=1),
        state=ExecutionState.initial(capital),
    )


def intent(
    execution_id: uuid.UUID,
    seq: int,
    *,
    symbol: str = "AAPL",
    quantity: str = "200",
    price: str = "175.5",
    side: Side = Side.BUY,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=client_order_id(execution_id, seq),
        execution_id=execution_id,
        intent_seq=seq,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        price=Decimal(price),
        purpose=OrderPurpose.INITIAL,
    )


def fill(order: OrderIntent, n: int, *, quantity: str, price: str, fee: str = "0.35") -> Fill:
    return Fill(
        fill_id=f"F-{order.client_order_id}-{n}",
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(fee),
        filled_at=T0 + timedelta(seconds=10 + n),
    )


def busy_state() -> ExecutionState:
    """A state with every field set to a value that is easy to get wrong."""
    return ExecutionState(
        status=ExecutionStatus.PAUSED,
        positions={
            "AAPL": {
                "quantity": Decimal("200"),
                "avg_cost": Decimal("175.123456789012345678901234567"),
                "realized_pnl": Decimal("-0.00000001"),
            }
        },
        cash=Decimal("64875.30864197530864197530866"),
        fees=Decimal("0.70"),
        realized_pnl=Decimal("-12.345678901234567890"),
        unrealized_pnl=Decimal("1234.5000"),
        total_pnl=Decimal("1222.154321098765432110"),
        total_trades=7,
        winning_trades=4,
        losing_trades=2,
        trading_state=TradingState.REDUCING,
        trading_day=date(2024, 1, 1),
        day_start_equity=Decimal("100000.00"),
        stop_reason=None,
    )


def creation(
    execution: NewExecution,
    *,
    owner: str = "w1",
    intents: Sequence[OrderIntent] = (),
    next_intent_seq: int | None = None,
    state: ExecutionState | None = None,
    events: Sequence[OutboxEvent] = (),
    risk_events: Sequence[RiskEventRecord] = (),
    release: bool = False,
) -> ExecutionWrite:
    """The first write of an execution, owned by `owner`."""
    return ExecutionWrite(
        execution_id=execution.execution_id,
        fence=Fence(owner_id=owner, epoch=FIRST_LEASE_EPOCH),
        version=FIRST_VERSION,
        create=execution,
        state=state,
        intents=intents,
        next_intent_seq=next_intent_seq,
        events=events,
        risk_events=risk_events,
        release=release,
    )


def step(record: ExecutionRecord, **changes: Any) -> ExecutionWrite:
    """The next write of an execution as its current owner sees it (version + 1)."""
    fence = changes.pop("fence", record.fence)
    assert fence is not None, "step() needs an owned execution or a fence"
    return ExecutionWrite(
        execution_id=record.execution_id,
        fence=fence,
        version=changes.pop("version", record.version + 1),
        **changes,
    )


async def create(store: Store, execution: NewExecution, **kwargs: Any) -> ExecutionRecord:
    """Commit a creation and return the stored execution."""
    outcome = await store.commit([creation(execution, **kwargs)])
    assert outcome.created == {execution.execution_id}
    record = await store.get_execution(execution.execution_id)
    assert record is not None
    return record


async def commit_one(store: Store, write: ExecutionWrite, **kwargs: Any) -> ExecutionRecord:
    """Commit one write that must hold, and return the execution after it."""
    outcome = await store.commit([write], **kwargs)
    assert outcome.lost == frozenset(), f"write for {write.execution_id} was fenced out"
    record = await store.get_execution(write.execution_id)
    assert record is not None
    return record


def outbox_event(execution: NewExecution, n: int, **payload: Any) -> OutboxEvent:
    """A `strategy.execution` event of an execution, numbered n (its id derives from n)."""
    return OutboxEvent(
        event_id=uuid.uuid5(execution.execution_id, f"event-{n}"),
        execution_id=execution.execution_id,
        user_id=execution.user_id,
        key=str(execution.strategy_id),
        event_type="strategy.execution.order_filled",
        payload={
            "type": "strategy.execution.order_filled",
            "execution_id": str(execution.execution_id),
            "n": n,
            **payload,
        },
    )


def risk_event(execution_id: uuid.UUID, n: int) -> RiskEventRecord:
    return RiskEventRecord(
        event_id=uuid.uuid5(execution_id, f"risk-{n}"),
        execution_id=execution_id,
        event_type="TRADING_STATE_CHANGED",
        severity=Severity.CRITICAL,
        description="ACTIVE -> REDUCING",
        action_taken="reduce",
        occurred_at=T0 + timedelta(minutes=n),
        details={"loss": Decimal("1234.50")},
    )


def snapshot(execution_id: uuid.UUID, n: int, *, total_pnl: str = "12.5") -> SnapshotRecord:
    return SnapshotRecord(
        snapshot_id=uuid.uuid5(execution_id, f"snapshot-{n}"),
        execution_id=execution_id,
        taken_at=T0 + timedelta(minutes=n),
        positions={"AAPL": {"quantity": Decimal("200"), "price": Decimal("175.5001")}},
        total_value=Decimal("100012.3456789"),
        total_pnl=Decimal(total_pnl),
        unrealized_pnl=Decimal("-0.0000001"),
        realized_pnl=Decimal("3.14"),
        cash=Decimal("64900.00"),
    )
