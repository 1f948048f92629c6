"""Closing summary of one execution, read back from the store.

P&L is recomputed by replaying the recorded fills through a fresh `Portfolio` and compared
with what the execution row holds: a paper run fails (exit code 1) if they differ by a cent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from strategy_worker.domain.orders import OrderStatus
from strategy_worker.domain.positions import Portfolio
from strategy_worker.store import Store


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionSummary:
    execution_id: uuid.UUID
    strategy_id: uuid.UUID
    name: str
    status: str
    orders: int
    orders_filled: int
    orders_rejected: int
    fills: int
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    total_pnl: Decimal
    trades_won: int
    trades_lost: int
    total_trades: int
    risk_events: int
    replayed_realized_pnl: Decimal
    consistent: bool

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form (Decimals as exact numbers via `encode_json`)."""
        return {
            "execution_id": str(self.execution_id),
            "strategy_id": str(self.strategy_id),
            "name": self.name,
            "status": self.status,
            "orders": self.orders,
            "orders_filled": self.orders_filled,
            "orders_rejected": self.orders_rejected,
            "fills": self.fills,
            "realized_pnl": self.realized_pnl,
            "unrealized_pnl": self.unrealized_pnl,
            "fees": self.fees,
            "total_pnl": self.total_pnl,
            "trades": {
                "total": self.total_trades,
                "won": self.trades_won,
                "lost": self.trades_lost,
            },
            "risk_events": self.risk_events,
            "replayed_realized_pnl": self.replayed_realized_pnl,
            "consistent": self.consistent,
        }


async def summarize(store: Store, execution_id: uuid.UUID) -> ExecutionSummary:
    record = await store.get_execution(execution_id)
    if record is None:
        raise LookupError(f"execution {execution_id} not found")
    orders = await store.get_orders(execution_id)
    fills = await store.get_fills(execution_id)
    events = await store.get_risk_events(execution_id)
    replay = Portfolio(record.initial_capital)
    for fill in fills:
        replay.apply_fill(fill.fill)
    state = record.state
    consistent = (
        replay.realized_pnl == state.realized_pnl
        and replay.fees == state.fees
        and replay.cash == state.cash
        and replay.total_trades == state.total_trades
        and replay.winning_trades == state.winning_trades
    )
    return ExecutionSummary(
        execution_id=execution_id,
        strategy_id=record.strategy_id,
        name=str(record.config.get("name", "")),
        status=str(state.status),
        orders=len(orders),
        orders_filled=sum(1 for o in orders if o.status is OrderStatus.FILLED),
        orders_rejected=sum(1 for o in orders if o.status is OrderStatus.REJECTED),
        fills=len(fills),
        realized_pnl=state.realized_pnl,
        unrealized_pnl=state.unrealized_pnl,
        fees=state.fees,
        total_pnl=state.total_pnl,
        trades_won=state.winning_trades,
        trades_lost=state.losing_trades,
        total_trades=state.total_trades,
        risk_events=len(events),
        replayed_realized_pnl=replay.realized_pnl,
        consistent=consistent,
    )
