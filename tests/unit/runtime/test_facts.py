"""An execution's facts rebuilt from its stored config: every risk param, its protection
included, survives a restart."""

from __future__ import annotations

import uuid
from decimal import Decimal

from strategy_worker.domain.protection import Leg
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.runtime.facts import info_from_config

D = Decimal


def info(risk_params: dict[str, object], worker: RiskLimits | None = None):  # type: ignore[no-untyped-def]
    return info_from_config(
        execution_id=uuid.uuid4(),
        strategy_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        config={"name": "t", "allocation": {"AAPL": "0.3"}, "risk_params": risk_params},
        initial_capital=D("100000"),
        worker_limits=worker or RiskLimits(),
    )


def test_a_strategys_own_protection_is_rebuilt_from_the_stored_config() -> None:
    # Before: only max_position_size, stop_loss_pct and max_daily_loss were read back, so a
    # strategy's trailing stop and take-profit were gone after a restart.
    facts = info(
        {
            "stop_loss_pct": "0.05",
            "trailing_stop_pct": "0.08",
            "take_profit_pct": "0.25",
            "protection": "emulated",
        }
    )

    assert facts.limits.trailing_stop_pct == D("0.08")
    assert facts.limits.take_profit_pct == D("0.25")
    spec = facts.protection
    assert spec is not None
    assert spec.legs == (Leg.STOP_LOSS, Leg.TRAILING_STOP, Leg.TAKE_PROFIT)
    assert spec.placement is ProtectionPlacement.EMULATED


def test_a_strategy_tightens_the_workers_trail_and_never_loosens_it() -> None:
    worker = RiskLimits(trailing_stop_pct=D("0.05"), protection=ProtectionPlacement.EMULATED)

    looser = info({"trailing_stop_pct": "0.10", "protection": "native"}, worker)
    tighter = info({"trailing_stop_pct": "0.03"}, worker)

    assert looser.protection is not None
    assert looser.protection.trailing_stop_pct == D("0.05")
    assert looser.protection.placement is ProtectionPlacement.EMULATED  # the worker insists
    assert tighter.protection is not None
    assert tighter.protection.trailing_stop_pct == D("0.03")


def test_no_configured_leg_means_no_protection_spec() -> None:
    assert info({}).protection is None
    assert info({"max_position_size": "0.2"}).protection is None
