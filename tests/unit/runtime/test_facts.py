"""Rebuilding an execution's facts from its stored config."""

from __future__ import annotations

import uuid
from decimal import Decimal

from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.runtime.facts import info_from_config

CONFIG = {
    "name": "Tech Growth Strategy",
    "type": "MOMENTUM",
    "symbols": ["AAPL", "MSFT", "GOOGL"],
    "allocation": {"AAPL": "0.35", "MSFT": "0.35", "GOOGL": "0.30"},
    "initial_capital": "100000.00",
    "risk_params": {"max_position_size": "0.30", "stop_loss_pct": "0.05"},
}


def test_info_from_config_when_weight_above_limit_then_target_capped_at_limit() -> None:
    info = info_from_config(
        execution_id=uuid.uuid4(),
        strategy_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        config=CONFIG,
        initial_capital=Decimal("100000.00"),
        worker_limits=RiskLimits(),
    )
    assert info.targets == {
        "AAPL": Decimal("0.30"),
        "GOOGL": Decimal("0.30"),
        "MSFT": Decimal("0.30"),
    }
    assert info.limits.stop_loss_pct == Decimal("0.05")


def test_info_from_config_when_strategy_looser_than_worker_then_worker_limit_holds() -> None:
    info = info_from_config(
        execution_id=uuid.uuid4(),
        strategy_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        config=CONFIG,
        initial_capital=Decimal("100000.00"),
        worker_limits=RiskLimits(max_position_size=Decimal("0.20")),
    )
    assert info.limits.max_position_size == Decimal("0.20")
    assert set(info.targets.values()) == {Decimal("0.20")}
    assert info.symbols == ("AAPL", "GOOGL", "MSFT")
