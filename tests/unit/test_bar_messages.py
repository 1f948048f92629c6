"""The bar message: exact decimals in, a Bar or a Rejection (code, field) out, never a raise."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.synthetic import random_bars
from strategy_worker.messages.bars import encode_bar_message, parse_bar_message

GOOD: dict[str, Any] = {
    "type": "market.bar",
    "symbol": "AAPL",
    "timeframe": "1d",
    "start": "2024-01-02T00:00:00Z",
    "open": 187.15,
    "high": 188.44,
    "low": 183.89,
    "close": 185.64,
    "volume": 82488700,
}


def _parse(**changes: Any) -> Bar | Rejection:
    message = {**GOOD, **changes}
    return parse_bar_message(json.dumps({k: v for k, v in message.items() if v is not ...}))


def test_numbers_are_read_exactly_from_the_text_and_strings_work_too() -> None:
    bar = parse_bar_message(
        b'{"type":"market.bar","symbol":"AAPL","timeframe":"1d",'
        b'"start":"2024-01-02T00:00:00+00:00","open":0.1,"high":"0.30",'
        b'"low":0.1,"close":0.2}'
    )
    assert isinstance(bar, Bar)
    assert (bar.open, bar.high, bar.close, bar.volume) == (
        Decimal("0.1"),
        Decimal("0.30"),
        Decimal("0.2"),
        0,
    )


def test_encode_and_parse_round_trip() -> None:
    for bar in random_bars(20, seed=5):
        assert parse_bar_message(encode_bar_message(bar)) == bar


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"type": "market.tick"}, "wrong_message_type", "type"),
        ({"symbol": ...}, "missing_field", "symbol"),
        ({"symbol": 5}, "wrong_type", "symbol"),
        ({"timeframe": "1y"}, "unknown_timeframe", "timeframe"),
        ({"start": "2024-01-02"}, "invalid_timestamp", "start"),
        ({"start": "2024-01-02T05:00:00Z"}, "misaligned_start", "start"),
        ({"end": "2024-01-02T12:00:00Z"}, "inconsistent_end", "end"),
        ({"open": True}, "wrong_type", "open"),
        ({"close": "abc"}, "wrong_type", "close"),
        ({"low": 190}, "inconsistent_ohlc", "high"),
        ({"volume": -5}, "invalid_volume", "volume"),
        ({"open": 0}, "invalid_price", "open"),
    ],
)
def test_malformed_bars_are_rejected_with_code_and_field(
    changes: dict[str, Any], code: str, field: str
) -> None:
    result = _parse(**changes)
    assert isinstance(result, Rejection)
    assert (result.code, result.path) == (code, field)


def test_json_level_problems_use_the_wire_codes() -> None:
    assert isinstance(parse_bar_message(b"x" * 5000), Rejection)
    assert parse_bar_message(b"x" * 5000).code == "oversized"  # type: ignore[union-attr]
    assert parse_bar_message(b'{"a": NaN}').code == "invalid_json"  # type: ignore[union-attr]
    assert parse_bar_message(b"[]").code == "not_an_object"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300)
    | st.dictionaries(
        st.sampled_from(sorted(GOOD)),
        st.text(max_size=10) | st.integers() | st.floats(allow_nan=False),
    ).map(lambda d: json.dumps({**GOOD, **d}).encode())
)
def test_any_payload_gives_a_bar_or_a_rejection(payload: bytes) -> None:
    assert isinstance(parse_bar_message(payload), Bar | Rejection)
