import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.ids import NAMESPACE, execution_id_for
from strategy_worker.domain.strategy import (
    ApprovedStrategy,
    Rejection,
    parse_strategy_message,
)

from ._factories import sample


def parse_ok(raw: object, **kwargs: Any) -> ApprovedStrategy:
    result = parse_strategy_message(raw, **kwargs)
    assert isinstance(result, ApprovedStrategy), result
    return result


def parse_err(raw: object, **kwargs: Any) -> Rejection:
    result = parse_strategy_message(raw, **kwargs)
    assert isinstance(result, Rejection), result
    return result


def test_spec_sample_bytes_parse_into_exact_decimals() -> None:
    strategy = parse_ok(json.dumps(sample()).encode())
    cfg = strategy.config
    assert strategy.strategy_id == uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
    assert cfg.symbols == ("AAPL", "MSFT", "GOOGL")
    assert cfg.allocation == {
        "AAPL": Decimal("0.35"),
        "MSFT": Decimal("0.35"),
        "GOOGL": Decimal("0.30"),
    }
    assert cfg.initial_capital == Decimal("100000.00")
    assert cfg.risk_params.stop_loss_pct == Decimal("0.05")
    assert cfg.entry_rules is not None  # the shorthand, read as a MOMENTUM strategy's
    assert cfg.entry_rules.to_json()["all"][0]["value"] == 40
    assert cfg.cash_weight == Decimal("0.00")
    assert strategy.approved_at.year == 2024
    assert strategy.approved_at.utcoffset() is not None


def test_execution_id_is_derived_from_strategy_id_and_message_timestamp() -> None:
    first = parse_ok(json.dumps(sample()))
    again = parse_ok(sample())
    assert first.execution_id == again.execution_id
    assert first.execution_id == execution_id_for(first.strategy_id, first.approved_at)
    # The instant, not its spelling: the same approval written with an offset.
    respelled = sample()
    respelled["timestamp"] = "2024-01-01T01:00:00+01:00"
    assert parse_ok(respelled).execution_id == first.execution_id
    # Ids of UTC timestamps are what they always were (they are persisted).
    assert first.execution_id == uuid.uuid5(
        NAMESPACE, f"execution:{first.strategy_id}:2024-01-01T00:00:00Z"
    )


def test_already_parsed_floats_become_their_shortest_decimal() -> None:
    msg = sample()
    msg["config"]["initial_capital"] = 175.5
    assert parse_ok(msg).config.initial_capital == Decimal("175.5")


def test_unknown_fields_are_kept_in_extra_and_raw() -> None:
    msg = sample()
    msg["config"]["leverage"] = {"max": 1.5}
    msg["trace_id"] = "abc"
    strategy = parse_ok(json.dumps(msg))
    assert strategy.config.extra == {"leverage": {"max": Decimal("1.5")}}
    assert strategy.raw["trace_id"] == "abc"
    assert strategy.config.to_json()["leverage"] == {"max": "1.5"}


def test_config_to_json_writes_decimals_as_strings() -> None:
    text = json.dumps(sample()).replace("100000.0", "100000.00").replace(": 0.3,", ": 0.30,")
    data = parse_ok(text).config.to_json()
    assert data["allocation"]["AAPL"] == "0.35"
    assert data["initial_capital"] == "100000.00"  # exactly as written in the message
    assert data["risk_params"] == {
        "max_position_size": "0.30",
        "stop_loss_pct": "0.05",
        "max_daily_loss": "0.05",
    }
    json.dumps(data)  # JSON-safe


def test_missing_risk_params_and_entry_rules_are_allowed() -> None:
    msg = sample()
    del msg["config"]["risk_params"], msg["config"]["entry_rules"]
    cfg = parse_ok(msg).config
    assert cfg.risk_params.max_position_size is None
    assert cfg.entry_rules is None
    assert cfg.exit_rules is None
    assert cfg.to_json()["entry_rules"] == {}  # stored exactly as before


def test_rejection_str_is_path_then_message() -> None:
    msg = sample()
    msg["config"]["allocation"]["AAPL"] = 0
    rej = parse_err(msg)
    assert rej.code == "weight_out_of_range"
    assert str(rej) == "config.allocation.AAPL: weight must be in (0, 1]"


def _set(path: str, value: object) -> dict[str, Any]:
    msg = sample()
    *parents, last = path.split(".")
    node = msg
    for key in parents:
        node = node[key]
    node[last] = value
    return msg


def _drop(path: str) -> dict[str, Any]:
    msg = sample()
    *parents, last = path.split(".")
    node = msg
    for key in parents:
        node = node[key]
    del node[last]
    return msg


@pytest.mark.parametrize(
    ("message", "code", "path"),
    [
        (_set("type", "strategy.rejected"), "wrong_message_type", "type"),
        (_drop("type"), "missing_field", "type"),
        (_drop("strategy_id"), "missing_field", "strategy_id"),
        (_set("strategy_id", "not-a-uuid"), "invalid_uuid", "strategy_id"),
        (_set("user_id", 42), "wrong_type", "user_id"),
        (_set("timestamp", "yesterday"), "invalid_timestamp", "timestamp"),
        (_set("timestamp", "2024-01-01T00:00:00"), "invalid_timestamp", "timestamp"),
        (_set("config", []), "wrong_type", "config"),
        (_drop("config.name"), "missing_field", "config.name"),
        (_set("config.name", "  "), "wrong_type", "config.name"),
        (_set("config.type", "YOLO"), "unknown_strategy_type", "config.type"),
        (_set("config.symbols", "AAPL"), "wrong_type", "config.symbols"),
        (_set("config.symbols", []), "invalid_symbol", "config.symbols"),
        (_set("config.symbols", ["AAPL", "aapl", "X"]), "invalid_symbol", "config.symbols[1]"),
        (_set("config.symbols", ["AAPL", "AAPL", "X"]), "invalid_symbol", "config.symbols[1]"),
        (_set("config.symbols", ["AAPL", 3, "X"]), "wrong_type", "config.symbols[1]"),
        (_set("config.symbols", ["AAPL", "MSFT"]), "allocation_mismatch", "config.allocation"),
        (_set("config.allocation.AAPL", 1.5), "weight_out_of_range", "config.allocation.AAPL"),
        (_set("config.allocation.AAPL", -0.1), "weight_out_of_range", "config.allocation.AAPL"),
        (_set("config.allocation.AAPL", "0.3"), "wrong_type", "config.allocation.AAPL"),
        (_set("config.allocation.AAPL", True), "wrong_type", "config.allocation.AAPL"),
        (_set("config.allocation.AAPL", 0.36), "allocation_over_100", "config.allocation"),
        (_set("config.initial_capital", 0), "invalid_capital", "config.initial_capital"),
        (_set("config.initial_capital", 1e13), "invalid_capital", "config.initial_capital"),
        (_set("config.initial_capital", None), "missing_field", "config.initial_capital"),
        (
            _set("config.risk_params.stop_loss_pct", 0.6),
            "invalid_risk_param",
            "config.risk_params.stop_loss_pct",
        ),
        (
            _set("config.risk_params.max_position_size", 0),
            "invalid_risk_param",
            "config.risk_params.max_position_size",
        ),
        (
            _set("config.risk_params.max_daily_loss", "5%"),
            "wrong_type",
            "config.risk_params.max_daily_loss",
        ),
        (_set("config.risk_params", [1]), "wrong_type", "config.risk_params"),
        (_set("config.entry_rules", "RSI"), "wrong_type", "config.entry_rules"),
    ],
)
def test_invalid_message_is_rejected_with_code_and_path(
    message: dict[str, Any], code: str, path: str
) -> None:
    rej = parse_err(json.dumps(message))
    assert (rej.code, rej.path) == (code, path)
    assert rej.message


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_rejected_as_invalid_json(token: str) -> None:
    text = json.dumps(sample()).replace("100000.0", token)
    assert token in text
    assert parse_err(text).code == "invalid_json"


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", "[1,]", b"null"])
def test_garbage_is_rejected_not_raised(raw: bytes | str) -> None:
    assert parse_err(raw).code in {"invalid_json", "wrong_type"}


def test_payload_over_max_bytes_is_rejected_before_parsing() -> None:
    rej = parse_err(b"{" + b" " * 100 + b"}", max_bytes=50)
    assert rej.code == "payload_too_large"


def test_symbol_outside_known_universe_is_rejected() -> None:
    rej = parse_err(sample(), known_symbols=frozenset({"AAPL", "MSFT"}))
    assert (rej.code, rej.path) == ("unknown_symbol", "config.symbols[2]")


def test_symbol_regex_accepts_class_shares_and_dashes() -> None:
    msg = _set("config.symbols", ["BRK.B", "RDS-A"])
    msg["config"]["allocation"] = {"BRK.B": 0.5, "RDS-A": 0.5}
    assert parse_ok(msg).config.symbols == ("BRK.B", "RDS-A")


def test_more_than_fifty_symbols_is_rejected() -> None:
    symbols = [f"S{i}" for i in range(51)]
    msg = _set("config.symbols", symbols)
    msg["config"]["allocation"] = {s: 0.01 for s in symbols}
    assert parse_err(msg).code == "invalid_symbol"


def test_absurd_numbers_are_rejected_not_raised() -> None:
    text = json.dumps(sample()).replace("100000.0", "1e999999999")
    assert parse_err(text).code == "invalid_capital"
    huge = json.dumps(sample()).replace("100000.0", "9" * 5000)
    assert parse_err(huge).code == "invalid_json"
    deep = "[" * 100000 + "]" * 100000
    assert parse_err(deep, max_bytes=10**6).code == "invalid_json"


# ----------------------------------------------------------------------- property tests

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_yields_strategy_or_rejection(value: object) -> None:
    result = parse_strategy_message(value)
    assert isinstance(result, ApprovedStrategy | Rejection)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_yield_a_rejection_or_strategy(raw: bytes) -> None:
    assert isinstance(parse_strategy_message(raw), ApprovedStrategy | Rejection)


_PATHS = [
    "type",
    "strategy_id",
    "user_id",
    "timestamp",
    "config",
    "config.name",
    "config.type",
    "config.symbols",
    "config.allocation",
    "config.allocation.AAPL",
    "config.initial_capital",
    "config.risk_params",
    "config.risk_params.stop_loss_pct",
    "config.entry_rules",
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_PATHS), json_values, st.booleans())
def test_sample_with_any_field_replaced_yields_strategy_or_rejection(
    path: str, value: object, as_text: bool
) -> None:
    message = _set(path, value)
    raw: object = message
    if as_text:
        try:
            raw = json.dumps(message, default=str)
        except ValueError:
            raw = message
    result = parse_strategy_message(raw)
    assert isinstance(result, ApprovedStrategy | Rejection)
    if isinstance(result, Rejection):
        assert result.code
        assert result.path
