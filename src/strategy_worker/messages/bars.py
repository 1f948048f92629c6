"""The bar message on `kafka.topics.bars` (default `market.bars`): one closed bar per record.

    {"type": "market.bar", "symbol": "AAPL", "timeframe": "1d",
     "start": "2024-01-02T00:00:00Z", "end": "2024-01-03T00:00:00Z",
     "open": 187.15, "high": 188.44, "low": 183.89, "close": 185.64, "volume": 82488700}

- `type` must be `market.bar`; `symbol` a tradable symbol (`^[A-Z][A-Z0-9.\\-]{0,9}$`);
  `timeframe` one of `timeframes.py`'s spellings; `start` ISO 8601 with a zone, a bar start
  of the timeframe in UTC; `end` optional, and if present exactly start + timeframe.
- `open`, `high`, `low`, `close`: exact decimals, as JSON numbers (read from their text,
  never through a float, as `jsonwire.parse_json_object` does) or as strings holding a
  decimal (`"187.15"`); `volume` the same, optional (0), never negative.
- Unknown fields are ignored (room for `vwap`, `trades`, ...). The Kafka key should be the
  symbol, so one symbol's bars stay in one partition, in order.

`parse_bar_message` never raises: any bytes give a `Bar` or a `Rejection` (the domain's one
type) with a stable code and the field, e.g. `high: must be >= open, close and low`
(`inconsistent_ohlc`). JSON-level codes come from `jsonwire.RejectCode` (`invalid_json`,
`oversized`, ...); field codes are `missing_field`, `wrong_type`, `wrong_message_type`,
`unknown_timeframe`, `invalid_timestamp`, `inconsistent_end` and those of `validate_bar`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from strategy_worker.domain.rejection import Rejected, Rejection
from strategy_worker.domain.signals.bars import ZERO, Bar, make_bar
from strategy_worker.domain.signals.timeframes import TIMEFRAME_HINT, parse_timeframe
from strategy_worker.messages.jsonwire import encode_json, isoformat_z, parse_json_object

BAR_MESSAGE_TYPE: Final = "market.bar"
MAX_BAR_BYTES: Final = 4096


def parse_bar_message(payload: bytes | str, *, max_bytes: int = MAX_BAR_BYTES) -> Bar | Rejection:
    """One bar message into a validated `Bar`, or why not; never raises."""
    obj = parse_json_object(payload, max_bytes=max_bytes)
    if not isinstance(obj, dict):
        return Rejection(str(obj.code), obj.field or "$", obj.reason)
    try:
        return _bar(obj)
    except Rejected as exc:
        return exc.rejection


def encode_bar_message(bar: Bar) -> bytes:
    """The message for `bar` (what a market-data producer sends; used by tools and tests)."""
    return encode_json(
        {
            "type": BAR_MESSAGE_TYPE,
            "symbol": bar.symbol,
            "timeframe": str(bar.timeframe),
            "start": isoformat_z(bar.start),
            "end": isoformat_z(bar.end),
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
        }
    ).encode("utf-8")


def _bar(obj: dict[str, Any]) -> Bar | Rejection:
    if _require(obj, "type") != BAR_MESSAGE_TYPE:
        raise Rejected("wrong_message_type", "type", f"must be {BAR_MESSAGE_TYPE!r}")
    symbol = _require(obj, "symbol")
    if not isinstance(symbol, str):
        raise Rejected("wrong_type", "symbol", "must be a string")
    tf = parse_timeframe(_require(obj, "timeframe"))
    if tf is None:
        raise Rejected("unknown_timeframe", "timeframe", TIMEFRAME_HINT)
    start = _moment(_require(obj, "start"), "start")
    made = make_bar(
        symbol=symbol,
        timeframe=tf,
        start=start,
        open=_decimal(_require(obj, "open"), "open"),
        high=_decimal(_require(obj, "high"), "high"),
        low=_decimal(_require(obj, "low"), "low"),
        close=_decimal(_require(obj, "close"), "close"),
        volume=ZERO if obj.get("volume") is None else _decimal(obj["volume"], "volume"),
    )
    end = obj.get("end")
    if isinstance(made, Bar) and end is not None and _moment(end, "end") != made.end:
        raise Rejected("inconsistent_end", "end", f"must be start + {tf} ({made.end})")
    return made


def _require(obj: dict[str, Any], key: str) -> Any:
    if obj.get(key) is None:
        raise Rejected("missing_field", key, "is required")
    return obj[key]


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise Rejected("wrong_type", field, "must be a number (or a string holding one)")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise Rejected("wrong_type", field, "must be a decimal number") from None
    if not number.is_finite():
        raise Rejected("wrong_type", field, "must be a finite number")
    return number


def _moment(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise Rejected("wrong_type", field, "must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected("invalid_timestamp", field, "must be ISO 8601") from None
    if moment.tzinfo is None:
        raise Rejected("invalid_timestamp", field, "must carry a timezone (e.g. Z)")
    return moment
