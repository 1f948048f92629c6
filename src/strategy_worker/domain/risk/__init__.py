"""Risk: limits, pre-trade checks, trading states, daily loss, stop-loss, rate limits."""

from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.manager import (
    APPROVED,
    Outcome,
    RiskContext,
    RiskDecision,
    RiskManager,
    RiskReason,
)
from strategy_worker.domain.risk.rate_limit import TokenBucket
from strategy_worker.domain.risk.state import ExecutionRisk, TradingState
from strategy_worker.domain.risk.stop_loss import StopLossMonitor, StopLossScan, stop_level

__all__ = [
    "APPROVED",
    "ExecutionRisk",
    "Outcome",
    "RiskContext",
    "RiskDecision",
    "RiskLimits",
    "RiskManager",
    "RiskReason",
    "StopLossMonitor",
    "StopLossScan",
    "TokenBucket",
    "TradingState",
    "stop_level",
]
