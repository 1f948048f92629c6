"""Exact JSON on the wire: Decimals as numbers from their text, and a strict decoder
(UTF-8, no duplicate keys, no NaN/Infinity, bounded size and depth) that never raises."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

# --------------------------------------------------------------------------- JSON encoding


def encode_json(value: object, *, indent: int | None = None) -> str:
    """JSON text with Decimals as exact numbers; `indent` gives json.dumps(indent=n) layout.

    Accepts dict (str keys), list/tuple, str, bool, None, int, finite Decimal and UUID.
    A float is refused: money must never have passed through binary floating point.
    """
    parts: list[str] = []
    _encode(value, parts, indent, 0)
    return "".join(parts)


def encode_event(event: Mapping[str, object]) -> bytes:
    """Compact UTF-8 JSON of one event, as published on Kafka."""
    return encode_json(event).encode("utf-8")


# The C string encoder json.dumps ends up in, without building a JSONEncoder per call.
_quote: Callable[[str], str] = json.encoder.encode_basestring
_CONSTANTS: dict[object, str] = {None: "null", True: "true", False: "false"}


def _encode(value: object, out: list[str], indent: int | None, level: int) -> None:
    # Exact types first (the common case, and cheaper than ABC checks); bool before int.
    kind = type(value)
    if kind is str:
        out.append(_quote(value))  # type: ignore[arg-type]
    elif value is None or kind is bool:
        out.append(_CONSTANTS[value])
    elif kind is Decimal:
        _encode_decimal(value, out)  # type: ignore[arg-type]
    elif kind is dict or (kind is not str and isinstance(value, Mapping)):
        _encode_mapping(value, out, indent, level)  # type: ignore[arg-type]
    elif isinstance(value, str):
        out.append(_quote(str(value)))
    elif isinstance(value, bool):
        out.append(_CONSTANTS[bool(value)])
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        _encode_decimal(value, out)
    elif isinstance(value, uuid.UUID):
        out.append(f'"{value}"')
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner, close, sep = _layout(indent, level)
        out.append("[" + inner)
        for position, item in enumerate(value):
            if position:
                out.append(sep)
            _encode(item, out, indent, level + 1)
        out.append(close + "]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON (floats are refused)")


def _encode_decimal(value: Decimal, out: list[str]) -> None:
    if not value.is_finite():
        raise ValueError(f"non-finite number cannot be encoded: {value}")
    out.append(format(value, "f"))


def _encode_mapping(
    value: Mapping[object, object], out: list[str], indent: int | None, level: int
) -> None:
    if not value:
        out.append("{}")
        return
    inner, close, sep = _layout(indent, level)
    out.append("{" + inner)
    for position, (key, item) in enumerate(value.items()):
        if not isinstance(key, str):
            raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
        if position:
            out.append(sep)
        out.append(_quote(key) + ": ")
        _encode(item, out, indent, level + 1)
    out.append(close + "}")


def _layout(indent: int | None, level: int) -> tuple[str, str, str]:
    if indent is None:
        return "", "", ", "
    pad = " " * indent
    return "\n" + pad * (level + 1), "\n" + pad * level, ",\n" + pad * (level + 1)


_LAST_MOMENT: list[tuple[datetime, str]] = []
"""The last instant formatted: the events of one step (one batch) share their instant."""


def isoformat_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix; microseconds only when present."""
    last = _LAST_MOMENT[0] if _LAST_MOMENT else None
    if last is not None and last[0] is moment:
        return last[1]
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    text = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    _LAST_MOMENT[:] = [(moment, text)]
    return text


def money_number(value: Decimal) -> Decimal:
    """A money amount as published: exact, with at least two decimals (175.5 -> 175.50)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        return value.quantize(Decimal("0.01"))  # only appends zeros: exact
    return value


def quantity_number(value: Decimal) -> Decimal | int:
    """A quantity as published: whole shares as an integer (200), fractions exact."""
    return int(value) if value == value.to_integral_value() else value


# --------------------------------------------------------------------------- strict JSON


class RejectCode(StrEnum):
    """Machine-readable reasons for refusing input; also the DLQ metric's label values."""

    OVERSIZED = "oversized"
    EMPTY_PAYLOAD = "empty_payload"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    HANDLER_ERROR = "handler_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input was refused: a code, the offending field path ("" = whole message)."""

    code: RejectCode
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.code}: {where}{self.reason}"


class InputRejected(Exception):
    """Raised inside a parser to carry a Rejection out; parsers return it, never raise it."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InputRejected(Rejection(RejectCode.INVALID_JSON, key, "duplicate key"))
        result[key] = value
    return result


def _no_constants(name: str) -> object:
    raise InputRejected(Rejection(RejectCode.INVALID_JSON, "", f"{name} is not a JSON number"))


def parse_json_object(payload: bytes | str, *, max_bytes: int) -> dict[str, Any] | Rejection:
    """Strict JSON object decode: UTF-8, no duplicate keys, no NaN/Infinity, numbers as
    Decimal, bounded size and nesting. Never raises."""
    try:
        raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    except UnicodeEncodeError:
        return Rejection(RejectCode.INVALID_ENCODING, "", "payload is not valid UTF-8")
    if not raw:
        return Rejection(RejectCode.EMPTY_PAYLOAD, "", "empty payload")
    if len(raw) > max_bytes:
        return Rejection(RejectCode.OVERSIZED, "", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(RejectCode.INVALID_ENCODING, "", "payload is not valid UTF-8")
    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except InputRejected as exc:
        return exc.rejection
    except RecursionError:
        return Rejection(RejectCode.INVALID_JSON, "", "nesting too deep")
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return Rejection(RejectCode.INVALID_JSON, "", str(exc).splitlines()[0][:200])
    if not isinstance(data, dict):
        return Rejection(RejectCode.NOT_AN_OBJECT, "", "top level must be a JSON object")
    return data
