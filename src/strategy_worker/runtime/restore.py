"""A runner for a stored execution: facts from its config, positions and the daily risk
state restored from its row (the daily loss budget survives restarts), order states from
its recorded orders and fills."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from strategy_worker.domain.clock import Clock
from strategy_worker.domain.order_state import OrderState
from strategy_worker.domain.orders import Fill, OrderStatus
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.manager import RiskManager
from strategy_worker.domain.risk.state import ExecutionRisk
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import info_from_config
from strategy_worker.store import ExecutionRecord, OrderRecord, TradingState


def runner_from_record(
    record: ExecutionRecord,
    *,
    worker_limits: RiskLimits,
    risk_manager: RiskManager,
    clock: Clock,
    **deps: Any,
) -> ExecutionRunner:
    """A runner for a stored execution (new or resumed), risk state restored from the row."""
    info = info_from_config(
        execution_id=record.execution_id,
        strategy_id=record.strategy_id,
        user_id=record.user_id,
        config=record.config,
        initial_capital=record.initial_capital,
        worker_limits=worker_limits,
    )
    state = record.state
    positions = state.positions
    portfolio = (
        Portfolio.from_json(positions)
        if positions and "cash" in positions
        else Portfolio(record.initial_capital)
    )
    now = clock.now()
    risk = ExecutionRisk(
        record.execution_id, info.limits, start_equity=portfolio.valuation({}).equity, now=now
    )
    # The daily loss budget, a halt and stop-out blocks survive restarts (same trading day).
    saved_risk = positions.get("risk") if positions else None
    if isinstance(saved_risk, Mapping):
        risk.restore(saved_risk, now)
    elif state.trading_day == risk.trading_day and state.day_start_equity is not None:
        risk.start_day(now, state.day_start_equity)
        risk.halted = state.trading_state is TradingState.HALTED
        risk.reducing = state.trading_state is TradingState.REDUCING
    risk.take_events()
    return ExecutionRunner(
        info=info,
        status=state.status,
        portfolio=portfolio,
        risk=risk,
        next_seq=record.next_intent_seq,
        fence=record.fence,
        risk_manager=risk_manager,
        clock=clock,
        **deps,
    )


def order_states(records: Sequence[OrderRecord], fills: Iterable[Fill]) -> dict[str, OrderState]:
    """Order states rebuilt from the store: replaying recorded fills restores the exact
    filled quantity, notional, fees and the set of fill ids already applied."""
    by_order: dict[str, list[Fill]] = {}
    for fill in fills:
        by_order.setdefault(fill.client_order_id, []).append(fill)
    states: dict[str, OrderState] = {}
    for rec in records:
        state = OrderState(rec.intent)
        if rec.oms_order_id:
            state.on_accepted(rec.oms_order_id)
        for fill in by_order.get(rec.client_order_id, ()):
            state.on_fill(fill)
        if rec.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            state.status = rec.status
            state.reason = rec.reason or ""
        states[rec.client_order_id] = state
    return states
