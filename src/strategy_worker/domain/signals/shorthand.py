"""The spec's shorthand for rules, read according to the strategy's `type`.

    "entry_rules": {"indicators": ["RSI", "MACD"], "rsi_threshold": 40, "macd_signal": "bullish"}

A shorthand rule set is the `all` of one condition per listed indicator, on `timeframe`
(default `1d`). What a condition says depends on the strategy type, because the same
number means opposite things to a momentum trader and to a mean-reversion trader:

- `RSI` (`rsi_threshold` t, `rsi_period` 14): MOMENTUM, TREND_FOLLOWING and BREAKOUT
  enter on RSI > t and exit on RSI < t (t = 50 unless given); MEAN_REVERSION enters on
  RSI < t (default 30) and exits on RSI > t (default 50).
- `MACD` (`macd_signal`: `bullish` | `bearish`; 12/26/9), every type: `bullish` is
  MACD line > signal line, `bearish` is MACD line < signal line; the default is `bullish`
  for an entry and `bearish` for an exit.
- `SMA` (`sma_period` 50) and `EMA` (`ema_period` 20): with the trend (MOMENTUM,
  TREND_FOLLOWING, BREAKOUT) enter on close > MA and exit on close < MA; MEAN_REVERSION
  enters on close < MA and exits on close > MA.
- `BBANDS` (`bb_period` 20, `bb_stddev` 2): MOMENTUM and TREND_FOLLOWING enter on
  close > middle, BREAKOUT on close > upper, and both exit on close < middle;
  MEAN_REVERSION enters on close < lower and exits on close > middle.

So the spec's MOMENTUM sample enters when RSI(14) > 40 and the MACD line is above its
signal line on a closed daily bar; the same keys on a MEAN_REVERSION strategy would enter
when RSI(14) < 40. Other types (VALUE, GROWTH, DIVIDEND, INDEX, ARBITRAGE, PAIRS_TRADING,
STATISTICAL_ARBITRAGE, MARKET_NEUTRAL, CUSTOM) have no agreed reading of these keys: their
shorthand is refused (`shorthand_unsupported_for_type`) and the explicit form is the way.
A key for an indicator that is not listed, or an unknown key, is refused
(`unknown_rule_parameter`), never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from strategy_worker.domain.rejection import Rejected
from strategy_worker.domain.signals.indicators import IndicatorSpec, make_spec
from strategy_worker.domain.signals.rules import (
    DEFAULT_TIMEFRAME,
    Condition,
    Group,
    Op,
    Operand,
    RuleKind,
    RuleSet,
    number_or_none,
)
from strategy_worker.domain.signals.timeframes import TIMEFRAME_HINT, parse_timeframe

WITH_TREND: Final = frozenset({"MOMENTUM", "TREND_FOLLOWING", "BREAKOUT"})
AGAINST_TREND: Final = frozenset({"MEAN_REVERSION"})
SHORTHAND_TYPES: Final = WITH_TREND | AGAINST_TREND

_INDICATORS: Final = ("RSI", "MACD", "SMA", "EMA", "BBANDS")
#: key -> the indicator it belongs to
_KEYS: Final = {
    "rsi_threshold": "RSI",
    "rsi_period": "RSI",
    "macd_signal": "MACD",
    "sma_period": "SMA",
    "ema_period": "EMA",
    "bb_period": "BBANDS",
    "bb_stddev": "BBANDS",
}
_CLOSE: Final = Operand(IndicatorSpec("PRICE"), "close")


def expand_shorthand(
    obj: Mapping[str, Any], *, kind: RuleKind, strategy_type: str, path: str, stored: bool
) -> RuleSet:
    """The explicit rule set the shorthand `obj` means for `kind` and `strategy_type`."""
    if strategy_type not in SHORTHAND_TYPES:
        raise Rejected(
            "shorthand_unsupported_for_type",
            path,
            f"the shorthand has no defined meaning for {strategy_type or 'this'} strategies; "
            "use the explicit form ('all' / 'any' of conditions)",
        )
    names = _indicator_list(obj.get("indicators"), f"{path}.indicators")
    for key in obj:
        if key in ("indicators", "timeframe"):
            continue
        owner = _KEYS.get(key)
        if owner is None:
            raise Rejected("unknown_rule_parameter", f"{path}.{key}", "is not a shorthand key")
        if owner not in names:
            raise Rejected(
                "unknown_rule_parameter", f"{path}.{key}", f"needs {owner} in 'indicators'"
            )
    raw_tf = obj.get("timeframe", DEFAULT_TIMEFRAME)
    tf = parse_timeframe(raw_tf)
    if tf is None:
        raise Rejected("unknown_timeframe", f"{path}.timeframe", TIMEFRAME_HINT)
    reader = _Reader(obj, path, stored)
    against = strategy_type in AGAINST_TREND
    entry = kind is RuleKind.ENTRY
    conditions = tuple(_condition(name, reader, entry, against, strategy_type) for name in names)
    return RuleSet(tf, Group("all", conditions))


def _condition(
    name: str, reader: _Reader, entry: bool, against: bool, strategy_type: str
) -> Condition:
    above_on_entry = not against
    rising = above_on_entry if entry else not above_on_entry
    if name == "RSI":
        default = Decimal(30 if (against and entry) else 50)
        threshold = reader.number("rsi_threshold", default, Decimal(0), Decimal(100))
        spec = make_spec("RSI", period=reader.period("rsi_period", 14))
        return Condition(Operand(spec, "value"), Op.GT if rising else Op.LT, threshold)
    if name == "MACD":
        direction = reader.choice("macd_signal", "bullish" if entry else "bearish")
        spec = make_spec("MACD")
        op = Op.GT if direction == "bullish" else Op.LT
        return Condition(Operand(spec, "macd"), op, Operand(spec, "signal"))
    if name in ("SMA", "EMA"):
        key = f"{name.lower()}_period"
        spec = make_spec(name, period=reader.period(key, 50 if name == "SMA" else 20))
        return Condition(_CLOSE, Op.GT if rising else Op.LT, Operand(spec, "value"))
    spec = make_spec(
        "BBANDS",
        period=reader.period("bb_period", 20, low=2),
        stddev=reader.number("bb_stddev", Decimal(2), Decimal(0), Decimal(10)),
    )
    if not entry:
        band = "middle"
    elif against:
        band = "lower"
    else:
        band = "upper" if strategy_type == "BREAKOUT" else "middle"
    return Condition(_CLOSE, Op.GT if rising else Op.LT, Operand(spec, band))


def _indicator_list(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Rejected("wrong_type", path, "must be a non-empty list of indicator names")
    names: list[str] = []
    for index, name in enumerate(value):
        item = f"{path}[{index}]"
        if not isinstance(name, str):
            raise Rejected("wrong_type", item, "must be a string")
        if name not in _INDICATORS:
            raise Rejected(
                "unknown_indicator",
                item,
                f"the shorthand knows {', '.join(_INDICATORS)} (others: explicit form)",
            )
        if name in names:
            raise Rejected("invalid_rules", item, f"{name} is listed twice")
        names.append(name)
    return tuple(names)


class _Reader:
    """Reads the shorthand's optional numbers and words with their paths."""

    def __init__(self, obj: Mapping[str, Any], path: str, stored: bool) -> None:
        self._obj = obj
        self._path = path
        self._stored = stored

    def number(self, key: str, default: Decimal, low: Decimal, high: Decimal) -> Decimal:
        """A number in the open interval (low, high)... or (low, high] for `bb_stddev`."""
        raw = self._obj.get(key)
        if raw is None:
            return default
        number = number_or_none(raw, self._stored)
        if number is None:
            raise Rejected("wrong_type", f"{self._path}.{key}", "must be a number")
        upper_ok = number <= high if key == "bb_stddev" else number < high
        if not (number > low and upper_ok):
            closing = "]" if key == "bb_stddev" else ")"
            raise Rejected(
                "invalid_rule_parameter",
                f"{self._path}.{key}",
                f"must be in ({low}, {high}{closing}",
            )
        return number

    def period(self, key: str, default: int, *, low: int = 1) -> int:
        raw = self._obj.get(key)
        if raw is None:
            return default
        number = number_or_none(raw, self._stored)
        if number is None or number != number.to_integral_value():
            raise Rejected("wrong_type", f"{self._path}.{key}", "must be a whole number")
        if not low <= number <= 250:
            raise Rejected(
                "invalid_rule_parameter", f"{self._path}.{key}", f"must be in [{low}, 250]"
            )
        return int(number)

    def choice(self, key: str, default: str) -> str:
        raw = self._obj.get(key, default)
        if raw not in ("bullish", "bearish"):
            raise Rejected(
                "invalid_rule_parameter", f"{self._path}.{key}", "must be 'bullish' or 'bearish'"
            )
        return str(raw)
