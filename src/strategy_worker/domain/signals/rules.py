"""Entry and exit rules: the typed rule tree, its parser and its canonical JSON.

Explicit form (docs/signals.md has the full grammar and examples)::

    {"timeframe": "1d",
     "all": [{"indicator": "RSI", "period": 14, "op": "<", "value": 40},
             {"indicator": "MACD", "fast": 12, "slow": 26, "signal": 9,
              "op": ">", "value": "signal"}]}

- a rule set has an optional `timeframe` (default `1d`) and exactly one of `all` / `any`,
  a list of 1..32 items; an item is a condition or a nested `{"all": [...]}` /
  `{"any": [...]}` (at most 4 levels, 32 conditions in all);
- a condition names an `indicator` (`indicators.CATALOG`), any of its parameters (the
  others take their defaults), optionally the `series` it compares (default: the
  indicator's first series), an `op` (`<`, `<=`, `>`, `>=`, `crosses_above`,
  `crosses_below`) and a `value`: a number, the name of another series of the same
  indicator (`"signal"`, `"upper"`) or of the bar (`"close"`, `"open"`, `"high"`, `"low"`,
  `"volume"`), or an object naming another indicator (`{"indicator": "EMA", "period": 50}`,
  with an optional `series`).

The shorthand of the spec (`"indicators": ["RSI", "MACD"], "rsi_threshold": 40, ...`) is
expanded into this form by `shorthand.py`, according to the strategy's `type`.

Every refusal is a `Rejection` with a stable code and the field path, e.g.
`config.entry_rules.all[1].op` (`unknown_comparison`). Codes: `wrong_type`,
`missing_field`, `invalid_rules` (structure), `unknown_indicator`,
`unknown_rule_parameter`, `invalid_rule_parameter`, `unknown_comparison`,
`unknown_series`, `unknown_timeframe`, `shorthand_unsupported_for_type`.

`RuleSet.to_json()` writes the canonical explicit form (every parameter spelled out), which
`parse_rule_set` reads back into an equal tree: also from the stored `config` JSON, where
Decimals have become strings (`stored=True`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

from strategy_worker.domain.rejection import Rejected
from strategy_worker.domain.signals.indicators import CATALOG, IndicatorSpec, ParamDef
from strategy_worker.domain.signals.timeframes import TIMEFRAME_HINT, Timeframe, parse_timeframe

DEFAULT_TIMEFRAME: Final = "1d"
MAX_CONDITIONS: Final = 32
MAX_DEPTH: Final = 4
_PRICE: Final = "PRICE"
_CONDITION_KEYS: Final = frozenset({"indicator", "series", "op", "value"})


class Op(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    CROSSES_ABOVE = "crosses_above"
    CROSSES_BELOW = "crosses_below"

    @property
    def crossing(self) -> bool:
        return self in (Op.CROSSES_ABOVE, Op.CROSSES_BELOW)


class RuleKind(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class Operand:
    """One series of one indicator on the rule set's timeframe."""

    spec: IndicatorSpec
    series: str

    @property
    def label(self) -> str:
        """`RSI(14)`, `MACD(12,26,9).signal`, `close`: the default series goes unnamed."""
        if self.spec.name == _PRICE:
            return self.series
        if self.series == self.spec.default_series and len(self.spec.series) == 1:
            return self.spec.label
        return f"{self.spec.label}.{self.series}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"indicator": self.spec.name}
        out.update(self.spec.params)
        if self.series != self.spec.default_series:
            out["series"] = self.series
        return out


@dataclass(frozen=True, slots=True)
class Condition:
    left: Operand
    op: Op
    right: Operand | Decimal
    """Another series, or a threshold (exact; compared as `float(threshold)`)."""

    def to_json(self) -> dict[str, Any]:
        out = self.left.to_json()
        out["op"] = str(self.op)
        right = self.right
        if isinstance(right, Decimal):
            out["value"] = right
        elif right.spec == self.left.spec or right.spec.name == _PRICE:
            out["value"] = right.series
        else:
            out["value"] = right.to_json()
        return out


@dataclass(frozen=True, slots=True)
class Group:
    mode: str
    """`all` or `any`."""
    items: tuple[Condition | Group, ...]

    def conditions(self) -> Iterator[Condition]:
        for item in self.items:
            if isinstance(item, Group):
                yield from item.conditions()
            else:
                yield item

    def to_json(self) -> dict[str, Any]:
        return {self.mode: [item.to_json() for item in self.items]}


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One rule (entry or exit): a condition tree evaluated on closed bars of `timeframe`."""

    timeframe: Timeframe
    root: Group

    def conditions(self) -> Iterator[Condition]:
        return self.root.conditions()

    def operands(self) -> tuple[Operand, ...]:
        """Every series the rule reads, in first-use order, without repeats."""
        seen: dict[Operand, None] = {}
        for cond in self.conditions():
            seen.setdefault(cond.left)
            if isinstance(cond.right, Operand):
                seen.setdefault(cond.right)
        return tuple(seen)

    def to_json(self) -> dict[str, Any]:
        """The canonical explicit form (thresholds as Decimal, parameters spelled out)."""
        return {"timeframe": str(self.timeframe), **self.root.to_json()}


@dataclass(frozen=True, slots=True)
class StrategyRules:
    """A strategy's entry and exit rules (either may be absent)."""

    entry: RuleSet | None = None
    exit: RuleSet | None = None

    def timeframes(self) -> frozenset[Timeframe]:
        return frozenset(r.timeframe for r in (self.entry, self.exit) if r is not None)


# ---------------------------------------------------------------------------- parsing


def parse_explicit(obj: Mapping[str, Any], path: str, stored: bool) -> RuleSet:
    """The explicit form (already a JSON object) into a `RuleSet`; raises `Rejected`."""
    modes = [key for key in ("all", "any") if key in obj]
    if len(modes) != 1:
        raise Rejected(
            "invalid_rules", path, "needs exactly one of 'all' or 'any' (or the shorthand)"
        )
    for key in obj:
        if key not in ("timeframe", "all", "any"):
            raise Rejected("unknown_rule_parameter", f"{path}.{key}", "is not a rule key")
    raw_tf = obj.get("timeframe", DEFAULT_TIMEFRAME)
    tf = parse_timeframe(raw_tf)
    if tf is None:
        if not isinstance(raw_tf, str):
            raise Rejected("wrong_type", f"{path}.timeframe", "must be a string")
        raise Rejected("unknown_timeframe", f"{path}.timeframe", TIMEFRAME_HINT)
    counter = [0]
    root = _group(modes[0], obj[modes[0]], f"{path}.{modes[0]}", 1, counter, stored)
    return RuleSet(tf, root)


def _group(
    mode: str, value: object, path: str, depth: int, counter: list[int], stored: bool
) -> Group:
    if depth > MAX_DEPTH:
        raise Rejected("invalid_rules", path, f"nests deeper than {MAX_DEPTH} levels")
    if not isinstance(value, list):
        raise Rejected("wrong_type", path, "must be a list of conditions")
    if not 1 <= len(value) <= MAX_CONDITIONS:
        raise Rejected("invalid_rules", path, f"must hold 1..{MAX_CONDITIONS} items")
    items: list[Condition | Group] = []
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        obj = json_object(item, item_path)
        nested = [key for key in ("all", "any") if key in obj]
        if nested:
            if len(obj) != 1:
                raise Rejected("invalid_rules", item_path, "a group holds only 'all' or 'any'")
            key = nested[0]
            items.append(_group(key, obj[key], f"{item_path}.{key}", depth + 1, counter, stored))
            continue
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise Rejected("invalid_rules", item_path, f"more than {MAX_CONDITIONS} conditions")
        items.append(_condition(obj, item_path, stored))
    return Group(mode, tuple(items))


def _condition(obj: Mapping[str, Any], path: str, stored: bool) -> Condition:
    left = _operand(obj, path, stored, extra_keys=_CONDITION_KEYS)
    raw_op = require(obj, "op", path)
    try:
        op = Op(raw_op)
    except ValueError:
        raise Rejected(
            "unknown_comparison", f"{path}.op", f"must be one of {', '.join(o.value for o in Op)}"
        ) from None
    raw = require(obj, "value", path)
    right: Operand | Decimal
    number = number_or_none(raw, stored)
    if number is not None:
        right = number
    elif isinstance(raw, str):
        right = _series_by_name(left.spec, raw, f"{path}.value")
    elif isinstance(raw, dict):
        right = _operand(json_object(raw, f"{path}.value"), f"{path}.value", stored, frozenset())
    else:
        raise Rejected(
            "wrong_type", f"{path}.value", "must be a number, a series name or an indicator object"
        )
    if right == left:
        raise Rejected("invalid_rules", f"{path}.value", "compares a series with itself")
    return Condition(left, op, right)


def _operand(
    obj: Mapping[str, Any], path: str, stored: bool, extra_keys: frozenset[str]
) -> Operand:
    name = require(obj, "indicator", path)
    if not isinstance(name, str):
        raise Rejected("wrong_type", f"{path}.indicator", "must be a string")
    if name not in CATALOG:
        raise Rejected(
            "unknown_indicator", f"{path}.indicator", f"must be one of {', '.join(CATALOG)}"
        )
    defs, series_names = CATALOG[name]
    allowed = extra_keys | {"indicator", "series"} | set(defs)
    for key in obj:
        if key not in allowed:
            raise Rejected(
                "unknown_rule_parameter", f"{path}.{key}", f"is not a parameter of {name}"
            )
    params = tuple(
        (key, _param(obj.get(key), d, f"{path}.{key}", stored)) for key, d in defs.items()
    )
    spec = IndicatorSpec(name, params)
    if name == "MACD" and spec.period("fast") >= spec.period("slow"):
        raise Rejected("invalid_rule_parameter", f"{path}.fast", "must be below slow")
    series = obj.get("series", series_names[0])
    if series not in series_names:
        raise Rejected(
            "unknown_series", f"{path}.series", f"{name} has series {', '.join(series_names)}"
        )
    return Operand(spec, series)


def _series_by_name(spec: IndicatorSpec, name: str, path: str) -> Operand:
    if name in spec.series:
        return Operand(spec, name)
    price = IndicatorSpec(_PRICE)
    if name in price.series:
        return Operand(price, name)
    options = sorted({*spec.series, *price.series})
    raise Rejected("unknown_series", path, f"a series name must be one of {', '.join(options)}")


def _param(value: object, d: ParamDef, path: str, stored: bool) -> int | Decimal:
    if value is None:
        return d.default
    number = number_or_none(value, stored)
    if number is None:
        raise Rejected("wrong_type", path, "must be a number")
    low_ok = number > d.low if d.low_exclusive else number >= d.low
    if not low_ok or number > d.high:
        bracket = "(" if d.low_exclusive else "["
        raise Rejected("invalid_rule_parameter", path, f"must be in {bracket}{d.low}, {d.high}]")
    if d.integer:
        if number != number.to_integral_value():
            raise Rejected("invalid_rule_parameter", path, "must be a whole number")
        return int(number)
    return Decimal(int(number)) if number == number.to_integral_value() else number.normalize()


def number_or_none(value: object, stored: bool) -> Decimal | None:
    """A JSON number as an exact Decimal; in stored JSON also a string holding one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if stored and isinstance(value, str) and value[:1] in "-+.0123456789":
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def json_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise Rejected("wrong_type", path, "must be a JSON object")
    return value


def require(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise Rejected("missing_field", f"{path}.{key}", "is required")
    return obj[key]
