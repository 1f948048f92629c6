"""Builders of store records for the PostgreSQL tests (unique ids every call)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.ids import client_order_id, execution_id_for
from strategy_worker.domain.orders import Fill, OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.store import ExecutionState, ExecutionStatus, NewExecution, TradingState

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
        execution_id=execution_id_for(strategy, approved_at.isoformat()),
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
