"""The immutable facts of an execution (from its approved config), shared by the runner,
its steps, intake and restore, with no behaviour of their own."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.protection import ProtectionSpec
from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.signals.parsing import parse_rules_from_config
from strategy_worker.domain.signals.rules import StrategyRules
from strategy_worker.domain.strategy import StrategyRiskParams


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionInfo:
    """The immutable facts of an execution."""

    execution_id: uuid.UUID
    strategy_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    initial_capital: Decimal
    targets: Mapping[str, Decimal]
    """Effective target weights (allocation capped at the tightened position limit)."""
    limits: RiskLimits
    """The worker's limits tightened by the strategy's risk params."""
    rules: StrategyRules | None = None
    """Its entry/exit rules (docs/signals.md), None without any."""
    rules_problem: Rejection | None = None
    """Why the stored rules could not be read back (then `rules` is None)."""
    started_at: datetime | None = None
    """When the execution started: its warm-up history is the bars before this instant."""
    protection: ProtectionSpec | None = None
    """The protective legs those limits configure (stop-loss, trailing stop, take-profit,
    where they rest); None when they configure none."""

    @property
    def key(self) -> str:
        """The Kafka key of the execution's events: its strategy id (the spec's)."""
        return str(self.strategy_id)

    @property
    def account_id(self) -> str:
        return str(self.user_id)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self.targets))


def info_from_config(
    *,
    execution_id: uuid.UUID,
    strategy_id: uuid.UUID,
    user_id: uuid.UUID,
    config: Mapping[str, Any],
    initial_capital: Decimal,
    worker_limits: RiskLimits,
    started_at: datetime | None = None,
) -> ExecutionInfo:
    """Rebuild the facts from the stored `config` JSON (as `StrategyConfig.to_json` wrote it):
    every risk param the strategy set, its own protection included, survives a restart."""
    params = StrategyRiskParams.from_stored(config.get("risk_params") or {})
    limits = worker_limits.tightened_by(params)
    spec = ProtectionSpec.from_limits(limits, include_stop_loss=True)
    cap = limits.max_position_size
    targets = {sym: min(Decimal(str(w)), cap) for sym, w in sorted(config["allocation"].items())}
    rules = parse_rules_from_config(config)
    problem = rules if isinstance(rules, Rejection) else None
    found = None if isinstance(rules, Rejection) or rules == StrategyRules() else rules
    return ExecutionInfo(
        execution_id=execution_id,
        strategy_id=strategy_id,
        user_id=user_id,
        name=str(config.get("name", "")),
        initial_capital=initial_capital,
        targets=targets,
        limits=limits,
        rules=found,
        rules_problem=problem,
        started_at=started_at,
        protection=spec if spec.enabled else None,
    )
