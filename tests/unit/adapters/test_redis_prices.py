"""Strict price parsing: any bytes in, a positive finite Decimal or None out."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategy_worker.adapters.redis_prices import parse_price, parse_timestamp


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"175.50", Decimal("175.50")),
        ("0.0001", Decimal("0.0001")),
        (b" 12 ", Decimal("12")),
        (b"0", None),
        (b"-3", None),
        (b"NaN", None),
        (b"Infinity", None),
        (b"1e999999", Decimal("1e999999")),
        (b"1" * 41, None),
        (b"\xff", None),
        (b"", None),
        (None, None),
    ],
)
def test_parse_price(raw: bytes | str | None, expected: Decimal | None) -> None:
    assert parse_price(raw) == expected


def test_naive_timestamp_is_rejected() -> None:
    assert parse_timestamp(b"2024-01-01T00:00:00") is None
    assert parse_timestamp(b"2024-01-01T00:00:00Z") is not None


@given(st.binary(max_size=60))
def test_parse_price_never_raises(raw: bytes) -> None:
    result = parse_price(raw)
    assert result is None or (result.is_finite() and result > 0)
