from datetime import time
from decimal import Decimal

import pytest
from pydantic import ValidationError

from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import StrategyRiskParams

D = Decimal


def test_defaults_are_the_specs() -> None:
    limits = RiskLimits()
    assert limits.min_order_value == D("100")
    assert limits.max_order_value == D("100000")
    assert limits.max_position_size == D("0.30")
    assert limits.position_warning_ratio == D("0.80")
    assert limits.max_total_exposure == D("1000000")
    assert limits.max_daily_loss == D("0.05")
    assert limits.max_daily_loss_amount == D("50000")
    assert limits.stop_loss_buffer == D("0.02")
    assert limits.trading_day_start == time(0, 0)


def test_unknown_keys_and_incoherent_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        RiskLimits(max_leverage=2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        RiskLimits(min_order_value=D("500"), max_order_value=D("100"))
    with pytest.raises(ValidationError):
        RiskLimits(max_position_size=D("1.5"))


def test_limits_are_frozen() -> None:
    with pytest.raises(ValidationError):
        RiskLimits().max_position_size = D("0.9")  # type: ignore[misc]


def test_strategy_params_only_tighten() -> None:
    worker = RiskLimits(stop_loss_pct=D("0.10"))
    loose = StrategyRiskParams(
        max_position_size=D("0.9"), stop_loss_pct=D("0.4"), max_daily_loss=D("0.5")
    )
    assert worker.tightened_by(loose) == worker
    tight = StrategyRiskParams(
        max_position_size=D("0.1"), stop_loss_pct=D("0.03"), max_daily_loss=D("0.01")
    )
    result = worker.tightened_by(tight)
    assert result.max_position_size == D("0.1")
    assert result.stop_loss_pct == D("0.03")
    assert result.max_daily_loss == D("0.01")
    assert result.max_daily_loss_amount == worker.max_daily_loss_amount


def test_strategy_stop_loss_applies_when_worker_has_none_and_tightening_is_idempotent() -> None:
    params = StrategyRiskParams(stop_loss_pct=D("0.05"))
    once = RiskLimits().tightened_by(params)
    assert once.stop_loss_pct == D("0.05")
    assert once.tightened_by(params) == once
    assert RiskLimits().tightened_by(None) == RiskLimits()
