"""What an evaluation of a rule decided, and what blocked the order it asked for.

A `SignalDecision` is recorded when an evaluation *fires* (asks to open or close a
position) or *changes* its outcome for that symbol and rule (warm-up -> not met,
not met -> met, ...), so a trader can always answer "why did it (not) trade?". It carries
the values the rule read (floats, as the indicators computed them), each condition's
result, the bar and the bar's exact close.

The engine sets the `warmup` and `exit_condition` gates itself; for everything after the
signal (trading state, exposure, cash, minimum value, rate, ...) the caller attaches the gate
with `with_gate` before recording (`gate_for_risk_reason` maps the risk manager's codes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from strategy_worker.domain.signals.rules import RuleKind
from strategy_worker.domain.signals.timeframes import Timeframe


class Outcome(StrEnum):
    FIRED = "fired"
    """The condition holds and the symbol's phase asks for it: open (entry) / close (exit)."""
    MET = "met"
    """The condition holds, but the engine itself holds the action back (see `gate`)."""
    NOT_MET = "not_met"
    WARMUP = "warmup"
    """Some indicator of the rule has not seen its warm-up bars yet."""


class Action(StrEnum):
    OPEN = "open"
    CLOSE = "close"


class Gate(StrEnum):
    """What kept a decision from becoming an order (the decision says which)."""

    WARMUP = "warmup"
    EXIT_CONDITION = "exit_condition"
    """An entry held on a bar where the exit rule holds too: entering would churn."""
    TRADING_STATE = "trading_state"
    """HALTED or REDUCING."""
    PAUSED = "paused"
    REENTRY_BLOCKED = "reentry_blocked"
    """A stop-out block on the symbol."""
    EXPOSURE = "exposure"
    CASH = "cash"
    POSITION_LIMIT = "position_limit"
    MIN_VALUE = "min_value"
    RATE = "rate"
    NO_PRICE = "no_price"
    NO_POSITION = "no_position"


_RISK_GATES: dict[str, Gate] = {
    "TRADING_HALTED": Gate.TRADING_STATE,
    "TRADING_REDUCING": Gate.TRADING_STATE,
    "REENTRY_BLOCKED": Gate.REENTRY_BLOCKED,
    "ORDER_VALUE_BELOW_MIN": Gate.MIN_VALUE,
    "DUST_SKIPPED": Gate.MIN_VALUE,
    "POSITION_LIMIT": Gate.POSITION_LIMIT,
    "INSUFFICIENT_CASH": Gate.CASH,
    "EXPOSURE_LIMIT": Gate.EXPOSURE,
    "RATE_LIMITED": Gate.RATE,
    "PRICE_MISSING": Gate.NO_PRICE,
    "NO_POSITION": Gate.NO_POSITION,
}


def gate_for_risk_reason(reason_code: str) -> Gate | None:
    """The gate for a risk denial or a sizing skip code (`RiskReason`, `DUST_SKIPPED`,
    `PRICE_MISSING`), or None for a code that is not a gate."""
    return _RISK_GATES.get(str(reason_code))


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """One leaf condition as evaluated on the bar."""

    left: str
    """The series compared, e.g. `RSI(14)` or `MACD(12,26,9)` (its line)."""
    op: str
    right: str
    """The other series' label, or the threshold's exact text (`40`)."""
    left_value: float | None
    right_value: float | None
    previous: tuple[float | None, float | None] | None
    """(left, right) on the bar before, for crossings; None for other comparisons."""
    result: bool | None
    """None while a value is still warming up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalDecision:
    """One recorded evaluation of one rule for one symbol on one closed bar."""

    symbol: str
    timeframe: Timeframe
    bar_start: datetime
    rule: RuleKind
    outcome: Outcome
    action: Action | None
    """Set exactly when `outcome` is FIRED."""
    decided_at: datetime
    """When the evaluation ran (never before the bar's end)."""
    close: Decimal
    """The bar's close, exact: the reference price of any order that follows."""
    conditions: tuple[ConditionResult, ...]
    values: Mapping[str, float | None]
    """Every series the rule read, by label (floats; None = warming up)."""
    gate: Gate | None = None

    @property
    def bar_end(self) -> datetime:
        return self.timeframe.end(self.bar_start)

    def with_gate(self, gate: Gate | None) -> SignalDecision:
        """The same decision with what blocked its order (None: nothing did)."""
        return dataclasses.replace(self, gate=gate)

    def details(self) -> dict[str, Any]:
        """The `values` JSONB of `signal_decisions`: floats stay JSON numbers, the close
        an exact Decimal (written as a string by the JSONB codec)."""
        return {
            "action": None if self.action is None else str(self.action),
            "close": self.close,
            "values": dict(self.values),
            "conditions": [
                {
                    "left": c.left,
                    "op": c.op,
                    "right": c.right,
                    "left_value": c.left_value,
                    "right_value": c.right_value,
                    "previous": None if c.previous is None else list(c.previous),
                    "result": c.result,
                }
                for c in self.conditions
            ],
        }
