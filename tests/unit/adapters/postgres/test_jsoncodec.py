"""JSONB codec: Decimals out as strings, numbers in as Decimal, nothing inexact."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from strategy_worker.adapters.postgres.jsoncodec import dumps, loads


def test_decimals_are_written_as_exact_strings() -> None:
    text = dumps(
        {"qty": Decimal("200"), "px": Decimal("175.123456789012345678901"), "e": Decimal("1E+3")}
    )

    assert json.loads(text) == {"qty": "200", "px": "175.123456789012345678901", "e": "1000"}


def test_numbers_read_back_as_decimal_never_float() -> None:
    value = loads('{"a": 0.1, "b": 1.10, "c": 40}')

    assert value == {"a": Decimal("0.1"), "b": Decimal("1.10"), "c": 40}
    assert str(value["b"]) == "1.10"


def test_uuids_and_dates_are_written_as_iso_text() -> None:
    ident = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
    when = datetime(2024, 1, 1, tzinfo=UTC)

    assert json.loads(dumps([ident, when, date(2024, 1, 2)])) == [
        str(ident),
        "2024-01-01T00:00:00+00:00",
        "2024-01-02",
    ]


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), float("nan")])
def test_non_finite_numbers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"(?i)nan|infinity|finite|compliant"):
        dumps({"x": bad})


def test_nan_in_stored_json_is_refused_on_read() -> None:
    with pytest.raises(ValueError, match="NaN"):
        loads('{"x": NaN}')


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        dumps({"x": object()})
