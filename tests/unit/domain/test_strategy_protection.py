"""risk_params for protective orders: parsing, storage, and tightening the worker's limits."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from strategy_worker.domain.protection import Leg, ProtectionSpec
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import (
    ApprovedStrategy,
    ProtectionPlacement,
    Rejection,
    StrategyRiskParams,
    parse_strategy_message,
)

from ._factories import sample

D = Decimal


def with_risk(**params: Any) -> dict[str, Any]:
    msg = sample()
    msg["config"]["risk_params"].update(params)
    return msg


def parse(msg: dict[str, Any]) -> ApprovedStrategy | Rejection:
    return parse_strategy_message(json.dumps(msg))


def test_protection_params_are_read_exactly_and_stored_as_strings() -> None:
    parsed = parse(with_risk(trailing_stop_pct=0.08, take_profit_pct=0.25, protection="native"))

    assert isinstance(parsed, ApprovedStrategy)
    params = parsed.config.risk_params
    assert (params.trailing_stop_pct, params.take_profit_pct) == (D("0.08"), D("0.25"))
    assert params.protection is ProtectionPlacement.NATIVE
    stored = parsed.config.to_json()["risk_params"]
    assert stored["trailing_stop_pct"] == "0.08"
    assert stored["protection"] == "native"
    assert StrategyRiskParams.from_stored(stored) == params


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"trailing_stop_pct": 0}, "config.risk_params.trailing_stop_pct"),
        ({"trailing_stop_pct": 0.6}, "config.risk_params.trailing_stop_pct"),
        ({"take_profit_pct": 11}, "config.risk_params.take_profit_pct"),
        ({"protection": "broker"}, "config.risk_params.protection"),
    ],
)
def test_out_of_range_protection_params_are_rejected_with_their_path(
    params: dict[str, Any], path: str
) -> None:
    rejection = parse(with_risk(**params))

    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.path) == ("invalid_risk_param", path)


def test_a_protection_placement_that_is_not_a_string_is_a_type_error() -> None:
    rejection = parse(with_risk(protection=1))

    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.path) == ("wrong_type", "config.risk_params.protection")


def test_a_strategy_tightens_but_never_loosens_the_worker_trail_and_take_profit() -> None:
    worker = RiskLimits(trailing_stop_pct=D("0.10"), take_profit_pct=D("0.30"))

    tighter = worker.tightened_by(
        StrategyRiskParams(trailing_stop_pct=D("0.05"), take_profit_pct=D("0.20"))
    )
    looser = worker.tightened_by(
        StrategyRiskParams(trailing_stop_pct=D("0.20"), take_profit_pct=D("0.50"))
    )

    assert (tighter.trailing_stop_pct, tighter.take_profit_pct) == (D("0.05"), D("0.20"))
    assert (looser.trailing_stop_pct, looser.take_profit_pct) == (D("0.10"), D("0.30"))
    own = RiskLimits().tightened_by(StrategyRiskParams(trailing_stop_pct=D("0.07")))
    assert own.trailing_stop_pct == D("0.07")  # no worker default: the strategy's own


def test_a_worker_that_emulates_keeps_every_strategy_emulated() -> None:
    emulated = RiskLimits(protection=ProtectionPlacement.EMULATED)
    auto = RiskLimits()
    native = StrategyRiskParams(protection=ProtectionPlacement.NATIVE)

    assert emulated.tightened_by(native).protection is ProtectionPlacement.EMULATED
    assert auto.tightened_by(native).protection is ProtectionPlacement.NATIVE
    assert auto.tightened_by(StrategyRiskParams()).protection is ProtectionPlacement.AUTO


def test_the_spec_of_an_execution_comes_from_its_tightened_limits() -> None:
    limits = RiskLimits(
        stop_loss_pct=D("0.05"),
        trailing_stop_pct=D("0.08"),
        protection_limit_offset_pct=D("0.01"),
        protection_native_grace=2.5,
    ).tightened_by(StrategyRiskParams(take_profit_pct=D("0.2")))

    spec = ProtectionSpec.from_limits(limits)
    without_stop = ProtectionSpec.from_limits(limits, include_stop_loss=False)

    assert spec.legs == (Leg.STOP_LOSS, Leg.TRAILING_STOP, Leg.TAKE_PROFIT)
    assert (spec.limit_offset_pct, spec.native_grace_s) == (D("0.01"), 2.5)
    assert without_stop.legs == (Leg.TRAILING_STOP, Leg.TAKE_PROFIT)
