"""The in-memory store's rows and the helpers both its handle and its commit use."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import Side
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.store import (
    ExecutionRecord,
    ExecutionStatus,
    FillRecord,
    OrderRecord,
)

RUNNING = (ExecutionStatus.ACTIVE, ExecutionStatus.PAUSED)

DecisionKey = tuple[uuid.UUID, str, str, datetime, str]
"""(execution id, symbol, timeframe, bar start, rule): the key of `signal_decisions`."""


def decision_key(execution_id: uuid.UUID, decision: SignalDecision) -> DecisionKey:
    return (
        execution_id,
        decision.symbol,
        str(decision.timeframe),
        decision.bar_start,
        str(decision.rule),
    )


def stored_exposure(positions: Mapping[str, Any], orders: Iterable[OrderRecord]) -> Decimal:
    """Exposure from a stored state: each held quantity at the state's stored mark (its last
    fill price when it has none) plus the remaining notional of live buys and of the buys
    waiting for a rate token."""
    marks = positions.get("marks") or {}
    total = ZERO
    for symbol, row in (positions.get("positions") or {}).items():
        mark = marks.get(symbol) or row.get("last_price") or "0"
        total += Decimal(str(row["quantity"])) * Decimal(str(mark))
    for order in orders:
        if order.side is Side.BUY and not order.status.is_terminal:
            total += (order.quantity - order.filled_quantity) * order.price
    for waiting in (positions.get("runtime") or {}).get("deferred") or ():
        if waiting.get("side") == "BUY":
            total += Decimal(str(waiting["quantity"])) * Decimal(str(waiting["price"]))
    return total


def happened(record: FillRecord) -> tuple[Any, ...]:
    """The order fills are read in, as PostgreSQL returns them: by the instant they
    happened; ties (one timestamp) by report sequence (reconciled fills, without one, last),
    then by key. Not the order they were recorded in: reconciliation can record a fill
    after others that happened later."""
    fill = record.fill
    seq = record.oms_seq
    return (fill.filled_at, seq is None, seq or 0, fill.client_order_id, fill.fill_id)


@dataclass
class Faults:
    """Injected store faults (see the module docstring)."""

    down_until: float = float("-inf")
    """Clock timestamp before which every call fails (an outage)."""
    commit_failures: list[bool] = field(default_factory=list)
    """Pending commit failures: True = fail after applying (outcome unknown to the caller)."""

    def fail_next_commit(self, *, applied: bool) -> None:
        self.commit_failures.append(applied)


@dataclass
class StoredExecution:
    """One execution's row with the keys of its orders and its fills, in record order."""

    record: ExecutionRecord
    order_ids: list[str] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProtectionRow:
    """One `execution_protection` row (the state as written: a fresh `to_json()` nobody
    changes afterwards; readers get a deep copy)."""

    state: dict[str, Any]
    unprotected: int
    revision: int


@dataclass(frozen=True, slots=True)
class WriteSeen:
    """One accepted write, with the fence it carried and who held the lease then."""

    execution_id: uuid.UUID
    owner_id: str
    epoch: int
    holder: str | None
    holder_epoch: int
