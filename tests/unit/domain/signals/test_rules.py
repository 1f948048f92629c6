"""Entry/exit rules at intake: the explicit form, the shorthand per strategy type, the
refusals (code and field path) and the round trip through the stored config JSON."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.domain.signals.indicators import CATALOG, make_spec
from strategy_worker.domain.signals.parsing import parse_rule_set, parse_rules_from_config
from strategy_worker.domain.signals.rules import Condition, Op, Operand, RuleKind
from strategy_worker.domain.signals.timeframes import timeframe
from strategy_worker.domain.strategy import (
    ApprovedStrategy,
    Rejection,
    StrategyConfig,
    parse_strategy_message,
)
from strategy_worker.messages.jsonwire import encode_json

from .._factories import sample

ISSUE_EXAMPLE: dict[str, Any] = {
    "timeframe": "1d",
    "all": [
        {"indicator": "RSI", "period": 14, "op": "<", "value": 40},
        {"indicator": "MACD", "fast": 12, "slow": 26, "signal": 9, "op": ">", "value": "signal"},
    ],
}


def _config(**changes: Any) -> StrategyConfig:
    msg = sample()
    msg["config"].update(changes)
    parsed = parse_strategy_message(json.dumps(msg, default=str))
    assert isinstance(parsed, ApprovedStrategy), parsed
    return parsed.config


def _rejection(**changes: Any) -> Rejection:
    msg = sample()
    msg["config"].update(changes)
    parsed = parse_strategy_message(json.dumps(msg, default=str))
    assert isinstance(parsed, Rejection), parsed
    return parsed


def _stored(config: StrategyConfig) -> dict[str, Any]:
    """The config as the runtime reads it back from the JSONB column."""
    loaded: dict[str, Any] = jsoncodec.loads(jsoncodec.dumps(config.to_json()))
    return loaded


def test_the_issues_explicit_form_parses_into_a_typed_tree() -> None:
    cfg = _config(entry_rules=ISSUE_EXAMPLE)
    rules = cfg.entry_rules
    assert rules is not None
    assert rules.timeframe == timeframe("1d")
    rsi, macd = rules.root.items
    assert rules.root.mode == "all"
    assert rsi == Condition(Operand(make_spec("RSI", period=14), "value"), Op.LT, Decimal(40))
    spec = make_spec("MACD", fast=12, slow=26, signal=9)
    assert macd == Condition(Operand(spec, "macd"), Op.GT, Operand(spec, "signal"))
    assert cfg.exit_rules is None


def test_to_json_writes_the_canonical_form_and_the_stored_config_reads_back_equal() -> None:
    cfg = _config(
        entry_rules=ISSUE_EXAMPLE,
        exit_rules={
            "any": [
                {"indicator": "RSI", "op": ">", "value": 70.5},
                {
                    "indicator": "PRICE",
                    "op": "crosses_below",
                    "value": {
                        "indicator": "BBANDS",
                        "period": 20,
                        "stddev": 2.5,
                        "series": "lower",
                    },
                },
            ]
        },
    )
    data = cfg.to_json()
    assert data["entry_rules"] == {
        "timeframe": "1d",
        "all": [
            {"indicator": "RSI", "period": 14, "op": "<", "value": "40"},
            {
                "indicator": "MACD",
                "fast": 12,
                "slow": 26,
                "signal": 9,
                "op": ">",
                "value": "signal",
            },
        ],
    }
    rules = parse_rules_from_config(_stored(cfg))
    assert not isinstance(rules, Rejection)
    assert rules.entry == cfg.entry_rules
    assert rules.exit == cfg.exit_rules


def test_a_strategy_without_rules_parses_and_stores_exactly_as_before() -> None:
    msg = sample()
    del msg["config"]["entry_rules"]
    parsed = parse_strategy_message(json.dumps(msg))
    assert isinstance(parsed, ApprovedStrategy)
    assert parsed.config.entry_rules is None
    assert parsed.config.exit_rules is None
    data = parsed.config.to_json()
    assert data["entry_rules"] == {}
    assert "exit_rules" not in data
    assert parse_rules_from_config(_stored(parsed.config)) == parse_rules_from_config({})


def test_empty_entry_rules_mean_no_rules() -> None:
    assert _config(entry_rules={}).entry_rules is None


# ------------------------------------------------------------------ shorthand per type

SPEC_SHORTHAND = {"indicators": ["RSI", "MACD"], "rsi_threshold": 40, "macd_signal": "bullish"}


def _entry(strategy_type: str, rules: dict[str, Any], kind: RuleKind = RuleKind.ENTRY) -> Any:
    key = "entry_rules" if kind is RuleKind.ENTRY else "exit_rules"
    cfg = _config(type=strategy_type, **{key: rules})
    tree = cfg.entry_rules if kind is RuleKind.ENTRY else cfg.exit_rules
    assert tree is not None
    return [
        (c.left.label, str(c.op), getattr(c.right, "label", c.right)) for c in tree.conditions()
    ]


def test_the_spec_sample_momentum_shorthand_enters_on_strength_and_a_bullish_macd() -> None:
    assert _entry("MOMENTUM", SPEC_SHORTHAND) == [
        ("RSI(14)", ">", Decimal(40)),
        ("MACD(12,26,9).macd", ">", "MACD(12,26,9).signal"),
    ]


def test_the_same_keys_mean_oversold_for_a_mean_reversion_strategy() -> None:
    assert _entry("MEAN_REVERSION", SPEC_SHORTHAND)[0] == ("RSI(14)", "<", Decimal(40))


@pytest.mark.parametrize(
    ("strategy_type", "kind", "expected"),
    [
        ("MOMENTUM", RuleKind.ENTRY, ("close", ">", "BBANDS(20,2).middle")),
        ("TREND_FOLLOWING", RuleKind.EXIT, ("close", "<", "BBANDS(20,2).middle")),
        ("BREAKOUT", RuleKind.ENTRY, ("close", ">", "BBANDS(20,2).upper")),
        ("MEAN_REVERSION", RuleKind.ENTRY, ("close", "<", "BBANDS(20,2).lower")),
        ("MEAN_REVERSION", RuleKind.EXIT, ("close", ">", "BBANDS(20,2).middle")),
    ],
)
def test_bollinger_shorthand_per_type(strategy_type: str, kind: RuleKind, expected: Any) -> None:
    assert _entry(strategy_type, {"indicators": ["BBANDS"]}, kind) == [expected]


def test_shorthand_defaults_and_exit_reading() -> None:
    assert _entry("MOMENTUM", {"indicators": ["RSI", "SMA"]}) == [
        ("RSI(14)", ">", Decimal(50)),
        ("close", ">", "SMA(50)"),
    ]
    assert _entry("MOMENTUM", {"indicators": ["RSI", "MACD"]}, RuleKind.EXIT) == [
        ("RSI(14)", "<", Decimal(50)),
        ("MACD(12,26,9).macd", "<", "MACD(12,26,9).signal"),
    ]
    assert _entry("MEAN_REVERSION", {"indicators": ["RSI", "EMA"], "ema_period": 10}) == [
        ("RSI(14)", "<", Decimal(30)),
        ("close", "<", "EMA(10)"),
    ]


def test_shorthand_timeframe_is_kept() -> None:
    cfg = _config(entry_rules={"indicators": ["RSI"], "timeframe": "4h"})
    assert cfg.entry_rules is not None
    assert cfg.entry_rules.timeframe == timeframe("4h")


# ------------------------------------------------------------------ refusals

_COND = {"indicator": "RSI", "op": "<", "value": 40}


def _all(*items: Any, **top: Any) -> dict[str, Any]:
    return {"all": list(items), **top}


@pytest.mark.parametrize(
    ("rules", "code", "path"),
    [
        (
            _all({**_COND, "indicator": "KDJ"}),
            "unknown_indicator",
            "config.entry_rules.all[0].indicator",
        ),
        (
            _all({**_COND, "length": 14}),
            "unknown_rule_parameter",
            "config.entry_rules.all[0].length",
        ),
        (_all({**_COND, "op": "=="}), "unknown_comparison", "config.entry_rules.all[0].op"),
        (_all(_COND, timeframe="7m"), "unknown_timeframe", "config.entry_rules.timeframe"),
        (_all(_COND, timeframe="60m"), "unknown_timeframe", "config.entry_rules.timeframe"),
        (_all({**_COND, "value": "upper"}), "unknown_series", "config.entry_rules.all[0].value"),
        (_all({**_COND, "series": "signal"}), "unknown_series", "config.entry_rules.all[0].series"),
        (
            _all({**_COND, "period": 0}),
            "invalid_rule_parameter",
            "config.entry_rules.all[0].period",
        ),
        (
            _all({**_COND, "period": 14.5}),
            "invalid_rule_parameter",
            "config.entry_rules.all[0].period",
        ),
        (_all({**_COND, "period": "14"}), "wrong_type", "config.entry_rules.all[0].period"),
        (
            _all({"indicator": "MACD", "fast": 26, "slow": 12, "op": ">", "value": 0}),
            "invalid_rule_parameter",
            "config.entry_rules.all[0].fast",
        ),
        (
            _all({"indicator": "BBANDS", "stddev": 0, "op": ">", "value": 1}),
            "invalid_rule_parameter",
            "config.entry_rules.all[0].stddev",
        ),
        (_all({"indicator": "RSI", "op": "<"}), "missing_field", "config.entry_rules.all[0].value"),
        (_all({**_COND, "value": True}), "wrong_type", "config.entry_rules.all[0].value"),
        (_all({**_COND, "value": "40"}), "unknown_series", "config.entry_rules.all[0].value"),
        (
            _all({"indicator": "RSI", "op": "<", "value": "value"}),
            "invalid_rules",
            "config.entry_rules.all[0].value",
        ),
        (
            _all({**_COND, "value": {"indicator": "EMA", "op": "<"}}),
            "unknown_rule_parameter",
            "config.entry_rules.all[0].value.op",
        ),
        ({"all": [_COND], "any": [_COND]}, "invalid_rules", "config.entry_rules"),
        ({"timeframe": "1d"}, "invalid_rules", "config.entry_rules"),
        (_all(), "invalid_rules", "config.entry_rules.all"),
        (
            _all({"any": [{"all": [{"any": [{"all": [_COND]}]}]}]}),
            "invalid_rules",
            "config.entry_rules.all[0].any[0].all[0].any[0].all",
        ),
        (_all(*([_COND] * 33)), "invalid_rules", "config.entry_rules.all"),
        ({"all": _COND}, "wrong_type", "config.entry_rules.all"),
        ({"all": [_COND], "when": "always"}, "unknown_rule_parameter", "config.entry_rules.when"),
        (
            {"indicators": ["RSI"], "macd_signal": "bullish"},
            "unknown_rule_parameter",
            "config.entry_rules.macd_signal",
        ),
        (
            {"indicators": ["RSI"], "rsi_treshold": 40},
            "unknown_rule_parameter",
            "config.entry_rules.rsi_treshold",
        ),
        ({"indicators": ["ATR"]}, "unknown_indicator", "config.entry_rules.indicators[0]"),
        (
            {"indicators": ["RSI"], "rsi_threshold": 100},
            "invalid_rule_parameter",
            "config.entry_rules.rsi_threshold",
        ),
        (
            {"indicators": ["MACD"], "macd_signal": "up"},
            "invalid_rule_parameter",
            "config.entry_rules.macd_signal",
        ),
        ({"indicators": []}, "wrong_type", "config.entry_rules.indicators"),
        ("RSI", "wrong_type", "config.entry_rules"),
    ],
)
def test_bad_rules_are_refused_at_intake_with_a_code_and_path(
    rules: Any, code: str, path: str
) -> None:
    rej = _rejection(entry_rules=rules)
    assert (rej.code, rej.path) == (code, path), rej


def test_exit_rules_are_checked_the_same_way() -> None:
    rej = _rejection(exit_rules=_all({**_COND, "op": "~"}))
    assert (rej.code, rej.path) == ("unknown_comparison", "config.exit_rules.all[0].op")


def test_the_shorthand_is_refused_for_a_type_without_an_agreed_reading() -> None:
    rej = _rejection(type="VALUE", entry_rules=SPEC_SHORTHAND)
    assert (rej.code, rej.path) == ("shorthand_unsupported_for_type", "config.entry_rules")
    # ... while the explicit form works for every type
    assert _config(type="VALUE", entry_rules=ISSUE_EXAMPLE).entry_rules is not None


# ------------------------------------------------------------------ properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_names = st.sampled_from([*CATALOG, "KDJ", "rsi", "all", "any", "op", "value", "series"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        _names, _json | st.lists(st.dictionaries(_names, _json, max_size=5), max_size=3), max_size=5
    )
)
def test_any_rules_object_gives_a_tree_or_a_rejection(rules: dict[str, Any]) -> None:
    for kind in RuleKind:
        result = parse_rule_set(rules, kind=kind, strategy_type="MOMENTUM", path="r")
        assert result is None or isinstance(result, Rejection) or result.to_json()


_numbers = st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False)


@st.composite
def _condition(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(CATALOG)))
    defs, series = CATALOG[name]
    cond: dict[str, Any] = {"indicator": name, "op": draw(st.sampled_from([o.value for o in Op]))}
    if name == "MACD":
        fast = draw(st.integers(1, 30))
        cond.update(fast=fast, slow=fast + draw(st.integers(1, 30)))
    elif "period" in defs:
        cond["period"] = draw(st.integers(int(defs["period"].low), 60))
    if len(series) > 1:
        cond["series"] = draw(st.sampled_from(series))
    cond["value"] = draw(
        _numbers
        | st.sampled_from(["close", "open", "high", "low"]).filter(
            lambda s: s != cond.get("series", series[0])
        )
        | st.just({"indicator": "EMA", "period": draw(st.integers(61, 90))})
    )
    return cond


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_condition(), min_size=1, max_size=6), st.sampled_from(["all", "any"]), st.booleans()
)
def test_every_valid_tree_round_trips_through_the_stored_json(
    conditions: list[dict[str, Any]], mode: str, nest: bool
) -> None:
    items: list[Any] = copy.deepcopy(conditions)
    if nest and len(items) > 1:
        items = [items[0], {"any" if mode == "all" else "all": items[1:]}]
    msg = json.loads(json.dumps(sample()), parse_float=Decimal)
    msg["config"]["exit_rules"] = {"timeframe": "15m", mode: items}
    parsed = parse_strategy_message(encode_json(msg))  # Decimals as JSON numbers
    assert isinstance(parsed, ApprovedStrategy), parsed
    rules = parse_rules_from_config(_stored(parsed.config))
    assert not isinstance(rules, Rejection), rules
    assert rules.exit == parsed.config.exit_rules
    assert rules.entry == parsed.config.entry_rules
