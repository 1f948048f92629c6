"""JSON for JSONB columns: Decimals go out as strings, JSON numbers come back as Decimal.

Strings keep money exact through every JSON consumer (the project's rule); reading numbers
as Decimal keeps a hand-written `1.10` exact too. Non-finite numbers are refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Set
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import money_str


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite decimal {value} cannot be stored")
        return money_str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Set):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """Encode for a JSONB parameter (compact; NaN and infinities refused)."""
    return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Decode a JSONB value; numbers with a fraction or exponent become Decimal."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number here")
