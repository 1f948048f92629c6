"""The `strategy.approved` message: parsing and validation into an `ApprovedStrategy`.

`parse_strategy_message` never raises on input: any JSON value (or any bytes) yields either
an `ApprovedStrategy` or a `Rejection` carrying a stable code and the field path.
Numbers are read as Decimal straight from the JSON text, so no binary float is involved.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from strategy_worker.domain.ids import execution_id_for
from strategy_worker.domain.money import money_str, to_decimal
from strategy_worker.domain.rejection import Rejected
from strategy_worker.domain.rejection import Rejection as Rejection  # the one, re-exported
from strategy_worker.domain.signals.parsing import rule_set_or_none
from strategy_worker.domain.signals.rules import RuleKind, RuleSet

MAX_MESSAGE_BYTES: Final = 65536
"""Default size limit of one message (`kafka.max_message_bytes`): a strategy with 50 symbols
is a few KiB, so anything near this is hostile input, refused before it is parsed."""

MESSAGE_TYPE: Final = "strategy.approved"
SYMBOL_RE: Final = re.compile(r"[A-Z][A-Z0-9.\-]{0,9}")
MAX_SYMBOLS: Final = 50
MAX_NAME_LENGTH: Final = 200
MAX_CAPITAL: Final = Decimal("1e12")
ONE: Final = Decimal(1)

#: Strategy types the worker executes; they share one allocation-driven execution path.
STRATEGY_TYPES: Final = frozenset(
    {
        "MOMENTUM",
        "MEAN_REVERSION",
        "TREND_FOLLOWING",
        "BREAKOUT",
        "VALUE",
        "GROWTH",
        "DIVIDEND",
        "ARBITRAGE",
        "PAIRS_TRADING",
        "STATISTICAL_ARBITRAGE",
        "MARKET_NEUTRAL",
        "INDEX",
        "CUSTOM",
    }
)

_CONFIG_KEYS: Final = frozenset(
    {
        "name",
        "type",
        "symbols",
        "allocation",
        "initial_capital",
        "risk_params",
        "entry_rules",
        "exit_rules",
    }
)
#: risk_params key -> (exclusive lower bound, inclusive upper bound)
_RISK_RANGES: Final = {
    "max_position_size": (Decimal(0), ONE),
    "stop_loss_pct": (Decimal(0), Decimal("0.5")),
    "max_daily_loss": (Decimal(0), ONE),
    "trailing_stop_pct": (Decimal(0), Decimal("0.5")),
    "take_profit_pct": (Decimal(0), Decimal(10)),
}


class ProtectionPlacement(StrEnum):
    """Where a position's protective orders rest (`risk_params.protection`, `risk.protection`).

    - `native`: at the OMS, for every leg the OMS supports (GetCapabilities); a leg it cannot
      hold is still protected, emulated by the worker, with a WARNING risk event;
    - `emulated`: in the worker, which releases a MARKET (or LIMIT) order on the trigger;
    - `auto`: native where supported, emulated otherwise, silently.
    A worker configured `emulated` keeps every strategy emulated (the operator does not trust
    the OMS's resting orders); otherwise a strategy's own choice applies.
    """

    NATIVE = "native"
    EMULATED = "emulated"
    AUTO = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyRiskParams:
    """A strategy's own limits; each one can only tighten the worker's (`RiskLimits`)."""

    max_position_size: Decimal | None = None
    stop_loss_pct: Decimal | None = None
    max_daily_loss: Decimal | None = None
    #: A trailing stop this fraction below the position's high-water mark.
    trailing_stop_pct: Decimal | None = None
    #: Take profit this fraction above the average cost.
    take_profit_pct: Decimal | None = None
    #: Where protective orders rest; None = the worker's `risk.protection`.
    protection: ProtectionPlacement | None = None

    @classmethod
    def from_stored(cls, risk: Mapping[str, Any]) -> StrategyRiskParams:
        """Rebuild from the stored `config.risk_params` (as `StrategyConfig.to_json` wrote it:
        Decimals as strings); values were validated when the message was accepted."""

        def dec(key: str) -> Decimal | None:
            value = risk.get(key)
            return None if value is None else to_decimal(value)

        placement = risk.get("protection")
        return cls(
            max_position_size=dec("max_position_size"),
            stop_loss_pct=dec("stop_loss_pct"),
            max_daily_loss=dec("max_daily_loss"),
            trailing_stop_pct=dec("trailing_stop_pct"),
            take_profit_pct=dec("take_profit_pct"),
            protection=None if placement is None else ProtectionPlacement(placement),
        )

    def to_json(self) -> dict[str, str]:
        """JSON-safe form (Decimals as strings); keys without a value are left out."""
        out = {
            key: money_str(value)
            for key, value in (
                ("max_position_size", self.max_position_size),
                ("stop_loss_pct", self.stop_loss_pct),
                ("max_daily_loss", self.max_daily_loss),
                ("trailing_stop_pct", self.trailing_stop_pct),
                ("take_profit_pct", self.take_profit_pct),
            )
            if value is not None
        }
        if self.protection is not None:
            out["protection"] = self.protection.value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyConfig:
    """The validated `config` object; unknown keys are kept in `extra`."""

    name: str
    type: str
    symbols: tuple[str, ...]
    allocation: Mapping[str, Decimal]
    initial_capital: Decimal
    risk_params: StrategyRiskParams
    entry_rules: RuleSet | None = None
    """When to open a symbol's position (`domain/signals/rules.py`); None: at approval."""
    exit_rules: RuleSet | None = None
    """When to close it; None: only stop-loss, daily loss and operators close."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cash_weight(self) -> Decimal:
        """The part of the capital the allocation leaves in cash."""
        return ONE - sum(self.allocation.values(), Decimal(0))

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form for the `config` JSONB column (Decimals as strings)."""
        risk = self.risk_params.to_json()
        out: dict[str, Any] = {key: _json_safe(value) for key, value in self.extra.items()}
        out.update(
            name=self.name,
            type=self.type,
            symbols=list(self.symbols),
            allocation={sym: money_str(w) for sym, w in self.allocation.items()},
            initial_capital=money_str(self.initial_capital),
            risk_params=risk,
            # The canonical explicit form (what is evaluated); `{}` without rules, as before.
            entry_rules=_json_safe(self.entry_rules.to_json() if self.entry_rules else {}),
        )
        if self.exit_rules is not None:
            out["exit_rules"] = _json_safe(self.exit_rules.to_json())
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovedStrategy:
    """A validated `strategy.approved` message; `raw` keeps the message as parsed."""

    strategy_id: uuid.UUID
    user_id: uuid.UUID
    timestamp: str
    approved_at: datetime
    config: StrategyConfig
    raw: Mapping[str, Any]

    @property
    def execution_id(self) -> uuid.UUID:
        """Deterministic: the same message always maps to the same execution."""
        return execution_id_for(self.strategy_id, self.approved_at)


class _Reject(Exception):
    """Internal control flow of the validator; never escapes this module."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(code, path, message)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a number in this contract")


def parse_strategy_message(
    raw: bytes | str | object,
    *,
    known_symbols: frozenset[str] | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> ApprovedStrategy | Rejection:
    """Parse and validate one `strategy.approved` message; never raises on bad input.

    `raw` is the Kafka value (bytes/str of JSON) or an already-parsed JSON value.
    `known_symbols`, when given, is the tradable universe; other symbols are rejected.
    """
    if isinstance(raw, bytes | bytearray | memoryview | str):
        size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
        if size > max_bytes:
            return Rejection("payload_too_large", "$", f"message is {size} bytes, max {max_bytes}")
        try:
            text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
            message: object = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return Rejection("invalid_json", "$", f"not valid JSON: {_short(exc)}")
    else:
        message = raw
    try:
        return _validate_message(message, known_symbols)
    except _Reject as rej:
        return rej.rejection


def _validate_message(message: object, known: frozenset[str] | None) -> ApprovedStrategy:
    obj = _object(message, "$")
    msg_type = _require(obj, "type", "$")
    if msg_type != MESSAGE_TYPE:
        raise _Reject("wrong_message_type", "type", f"must be {MESSAGE_TYPE!r}")
    strategy_id = _uuid(_require(obj, "strategy_id", "$"), "strategy_id")
    user_id = _uuid(_require(obj, "user_id", "$"), "user_id")
    timestamp = _string(_require(obj, "timestamp", "$"), "timestamp")
    approved_at = _timestamp(timestamp)
    config = _config(_require(obj, "config", "$"), known)
    return ApprovedStrategy(
        strategy_id=strategy_id,
        user_id=user_id,
        timestamp=timestamp,
        approved_at=approved_at,
        config=config,
        raw=obj,
    )


def _config(value: object, known: frozenset[str] | None) -> StrategyConfig:
    obj = _object(value, "config")
    name = _string(_require(obj, "name", "config"), "config.name")
    if not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise _Reject("wrong_type", "config.name", f"must be 1..{MAX_NAME_LENGTH} characters")
    strategy_type = _string(_require(obj, "type", "config"), "config.type")
    if strategy_type not in STRATEGY_TYPES:
        raise _Reject(
            "unknown_strategy_type",
            "config.type",
            f"must be one of {', '.join(sorted(STRATEGY_TYPES))}",
        )
    symbols = _symbols(_require(obj, "symbols", "config"), known)
    allocation = _allocation(_require(obj, "allocation", "config"), symbols)
    capital = _number(_require(obj, "initial_capital", "config"), "config.initial_capital")
    if not Decimal(0) < capital <= MAX_CAPITAL:
        raise _Reject("invalid_capital", "config.initial_capital", "must be in (0, 1000000000000]")
    risk_params = _risk_params(obj.get("risk_params"))
    entry_rules, exit_rules = _rules(obj, strategy_type)
    extra = {key: val for key, val in obj.items() if key not in _CONFIG_KEYS}
    return StrategyConfig(
        name=name,
        type=strategy_type,
        symbols=symbols,
        allocation=MappingProxyType(allocation),
        initial_capital=capital,
        risk_params=risk_params,
        entry_rules=entry_rules,
        exit_rules=exit_rules,
        extra=extra,
    )


def _symbols(value: object, known: frozenset[str] | None) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Reject("wrong_type", "config.symbols", "must be a list of symbols")
    if not 1 <= len(value) <= MAX_SYMBOLS:
        raise _Reject("invalid_symbol", "config.symbols", f"must hold 1..{MAX_SYMBOLS} symbols")
    seen: set[str] = set()
    for index, sym in enumerate(value):
        path = f"config.symbols[{index}]"
        if not isinstance(sym, str):
            raise _Reject("wrong_type", path, "must be a string")
        if SYMBOL_RE.fullmatch(sym) is None:
            raise _Reject("invalid_symbol", path, f"{sym!r} is not a valid symbol")
        if sym in seen:
            raise _Reject("invalid_symbol", path, f"{sym} appears twice")
        if known is not None and sym not in known:
            raise _Reject("unknown_symbol", path, f"{sym} is not tradable here")
        seen.add(sym)
    return tuple(value)


def _allocation(value: object, symbols: tuple[str, ...]) -> dict[str, Decimal]:
    obj = _object(value, "config.allocation")
    if set(obj) != set(symbols):
        missing = sorted(set(symbols) - set(obj))
        surplus = sorted(set(obj) - set(symbols))
        raise _Reject(
            "allocation_mismatch",
            "config.allocation",
            f"keys must equal symbols (missing {missing}, unexpected {surplus})",
        )
    weights: dict[str, Decimal] = {}
    for sym in symbols:
        path = f"config.allocation.{sym}"
        weight = _number(obj[sym], path)
        if not Decimal(0) < weight <= ONE:
            raise _Reject("weight_out_of_range", path, "weight must be in (0, 1]")
        weights[sym] = weight
    if sum(weights.values(), Decimal(0)) > ONE:
        raise _Reject("allocation_over_100", "config.allocation", "weights must sum to at most 1")
    return weights


def _risk_params(value: object) -> StrategyRiskParams:
    if value is None:
        return StrategyRiskParams()
    obj = _object(value, "config.risk_params")
    found: dict[str, Decimal | None] = {}
    for key, (low, high) in _RISK_RANGES.items():
        item = obj.get(key)
        path = f"config.risk_params.{key}"
        if item is None:
            found[key] = None
            continue
        number = _number(item, path)
        if not low < number <= high:
            raise _Reject("invalid_risk_param", path, f"must be in ({low}, {high}]")
        found[key] = number
    placement: ProtectionPlacement | None = None
    raw_placement = obj.get("protection")
    if raw_placement is not None:
        path = "config.risk_params.protection"
        text = _string(raw_placement, path)
        try:
            placement = ProtectionPlacement(text)
        except ValueError:
            choices = ", ".join(p.value for p in ProtectionPlacement)
            raise _Reject("invalid_risk_param", path, f"must be one of {choices}") from None
    return StrategyRiskParams(**found, protection=placement)


def _rules(obj: Mapping[str, Any], strategy_type: str) -> tuple[RuleSet | None, RuleSet | None]:
    """`entry_rules` and `exit_rules` as rule trees (absent or `{}`: None)."""
    try:
        entry, exit_ = (
            rule_set_or_none(
                obj.get(f"{kind}_rules"),
                kind=kind,
                strategy_type=strategy_type,
                path=f"config.{kind}_rules",
            )
            for kind in (RuleKind.ENTRY, RuleKind.EXIT)
        )
    except Rejected as exc:
        rej = exc.rejection
        raise _Reject(rej.code, rej.path, rej.message) from None
    return entry, exit_


# ------------------------------------------------------------------------------ primitives


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise _Reject("wrong_type", path, "must be a JSON object")
    return value


def _require(obj: Mapping[str, Any], key: str, parent: str) -> Any:
    if key not in obj or obj[key] is None:
        path = key if parent == "$" else f"{parent}.{key}"
        raise _Reject("missing_field", path, "is required")
    return obj[key]


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _Reject("wrong_type", path, "must be a string")
    return value


def _number(value: object, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _Reject("wrong_type", path, "must be a number")
    try:
        return to_decimal(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise _Reject("wrong_type", path, "must be a finite number") from exc


def _uuid(value: object, path: str) -> uuid.UUID:
    text = _string(value, path)
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise _Reject("invalid_uuid", path, f"{_clip(text)!r} is not a UUID") from exc


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _Reject("invalid_timestamp", "timestamp", "must be an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise _Reject("invalid_timestamp", "timestamp", "must carry a timezone (e.g. Z)")
    return parsed


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money_str(value)
    if isinstance(value, dict):
        return {key: _json_safe(val) for key, val in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(val) for val in value]
    return value


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _short(exc: BaseException) -> str:
    return _clip(str(exc) or type(exc).__name__, 120)
