"""A runner for a stored execution: facts from its config, positions, the daily risk state
and the runtime's plans from its row, order states replayed from its orders and fills, the
protection book from its committed state (`execution_protection`; re-armed by the
reconciliation every restore is followed by).

The day's start equity survives a restart on the same trading day; on a later day the new
day waits for the first valuation at fresh marks (`ExecutionRisk.open_pending`), never a
valuation at fill prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from strategy_worker.domain.clock import Clock
from strategy_worker.domain.order_state import OrderState
from strategy_worker.domain.orders import Fill, OrderStatus
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.state import ExecutionRisk
from strategy_worker.runtime.facts import info_from_config
from strategy_worker.runtime.model import ExecutionModel, RuntimePlans
from strategy_worker.runtime.protection import ProtectionDesk
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.store import (
    ExecutionRecord,
    JsonObject,
    LoadedExecution,
    OrderRecord,
    TradingState,
)


def runner_from(
    loaded: LoadedExecution,
    *,
    worker_limits: RiskLimits,
    clock: Clock,
    protection: ProtectionDesk | None = None,
    protection_state: JsonObject | None = None,
) -> ExecutionRunner:
    """The runner of a stored execution, as its last commit left it (`protection_state`:
    its stored protection book, `Store.load_protection`)."""
    record = loaded.record
    info = info_from_config(
        execution_id=record.execution_id,
        strategy_id=record.strategy_id,
        user_id=record.user_id,
        config=record.config,
        initial_capital=record.initial_capital,
        worker_limits=worker_limits,
        started_at=record.started_at,
    )
    state = record.state
    positions = state.positions
    portfolio = (
        Portfolio.from_json(positions)
        if positions and "cash" in positions
        else Portfolio(record.initial_capital)
    )
    plans = RuntimePlans.from_json(positions.get("runtime") if positions else None)
    now = clock.now()
    risk = ExecutionRisk(
        record.execution_id, info.limits, start_equity=record.initial_capital, now=now
    )
    today = _restore_risk(risk, record, now)
    if not today and portfolio.positions:
        # The day began while nobody watched: its start equity is the first valuation at
        # fresh marks, taken by the monitor step (never this one, at fill prices).
        risk.open_pending(now)
        plans = RuntimePlans(
            stop=plans.stop,
            deferred=plans.deferred,
            rebalance_drift=plans.rebalance_drift,
            day_start_pending=True,
        )
    elif plans.day_start_pending:
        risk.open_pending(now)
    elif not today:
        risk.start_day(now, portfolio.valuation({}).equity)  # all cash: exact at any marks
    risk.take_events()
    model = ExecutionModel(
        status=state.status,
        portfolio=portfolio,
        risk=risk,
        orders=order_states(loaded.orders, [f.fill for f in loaded.fills]),
        next_seq=record.next_intent_seq,
        version=record.version,
        plans=plans,
        protection=None if protection is None else protection.restore(info, protection_state),
    )
    fence = record.fence
    if fence is None:
        raise ValueError(f"execution {record.execution_id} is not owned: no runner without a lease")
    return ExecutionRunner(
        info=info, model=model, fence=fence, ledger_exposure=record.ledger_exposure
    )


def _restore_risk(risk: ExecutionRisk, record: ExecutionRecord, now: object) -> bool:
    """Load the saved risk state; True when it is from today's trading day."""
    state = record.state
    saved = state.positions.get("risk") if state.positions else None
    if isinstance(saved, Mapping):
        return risk.restore(saved, now)  # type: ignore[arg-type]
    if state.trading_day == risk.trading_day and state.day_start_equity is not None:
        risk.start_day(now, state.day_start_equity)  # type: ignore[arg-type]
        risk.halted = state.trading_state is TradingState.HALTED
        risk.reducing = state.trading_state is TradingState.REDUCING
        return True
    return False


def order_states(records: Sequence[OrderRecord], fills: Iterable[Fill]) -> dict[str, OrderState]:
    """Order states rebuilt from the store: replaying recorded fills restores the exact
    filled quantity, notional, fees and the fill ids already applied."""
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
