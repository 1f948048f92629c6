"""Closing summary of one execution, read back from the store.

Every stored figure (the execution row, the stored portfolio with each position, every
order) is checked against a replay of the recorded fills (`paper.consistency`): the
summary is `consistent` only when none differs, and `mismatches` says which ones did; a
paper run fails (exit code 1) otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.paper.consistency import Mismatch, check_execution
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
    mismatches: tuple[Mismatch, ...] = ()
    """Each stored figure that differs from the replay of the fills (empty: consistent)."""

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
            "mismatches": [m.to_json() for m in self.mismatches],
        }


async def summarize(
    store: Store, execution_id: uuid.UUID, *, marks: Mapping[str, Decimal] | None = None
) -> ExecutionSummary:
    """The execution's summary, every stored figure checked against the replay of its fills.

    `marks` are the prices its open positions were last valued at (they win over marks
    stored under ``positions["marks"]``); without one for an open position its unrealized
    P&L cannot be checked, which is a mismatch. After a closing stop nothing is open.
    """
    record = await store.get_execution(execution_id)
    if record is None:
        raise LookupError(f"execution {execution_id} not found")
    orders = await store.get_orders(execution_id)
    fills = await store.get_fills(execution_id)
    events = await store.get_risk_events(execution_id)
    replay, mismatches = check_execution(record, orders, fills, marks=marks)
    state = record.state
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
        replayed_realized_pnl=replay.realized_pnl if replay is not None else ZERO,
        consistent=not mismatches,
        mismatches=tuple(mismatches),
    )
