"""Small builders shared by the domain tests."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.orders import Fill, OrderIntent, OrderPurpose, OrderType, Side

EXECUTION_ID = uuid.UUID("770e8400-e29b-41d4-a716-446655440000")
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)

SPEC_SAMPLE: dict[str, Any] = {
    "type": "strategy.approved",
    "strategy_id": "550e8400-e29b-41d4-a716-446655440000",
    "user_id": "660e8400-e29b-41d4-a716-446655440000",
    "timestamp": "2024-01-01T00:00:00Z",
    "config": {
        "name": "Tech Growth Strategy",
        "type": "MOMENTUM",
        "symbols": ["AAPL", "MSFT", "GOOGL"],
        "allocation": {"AAPL": 0.35, "MSFT": 0.35, "GOOGL": 0.30},
        "initial_capital": 100000.00,
        "risk_params": {"max_position_size": 0.30, "stop_loss_pct": 0.05, "max_daily_loss": 0.05},
        "entry_rules": {
            "indicators": ["RSI", "MACD"],
            "rsi_threshold": 40,
            "macd_signal": "bullish",
        },
    },
}


def sample() -> dict[str, Any]:
    return copy.deepcopy(SPEC_SAMPLE)


def intent(
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    quantity: str | int | Decimal = 10,
    price: str | int | Decimal = "100",
    purpose: OrderPurpose = OrderPurpose.INITIAL,
    seq: int = 1,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=f"sw-test-{seq:06d}",
        execution_id=EXECUTION_ID,
        intent_seq=seq,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        price=Decimal(price),
        purpose=purpose,
    )


_fill_counter = iter(range(1, 10**9))


def fill(
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    quantity: str | int | Decimal = 10,
    price: str | int | Decimal = "100",
    fee: str | int | Decimal = "0",
    fill_id: str | None = None,
    client_order_id: str = "sw-test-000001",
) -> Fill:
    return Fill(
        fill_id=fill_id or f"f-{next(_fill_counter)}",
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(fee),
        filled_at=T0,
    )
