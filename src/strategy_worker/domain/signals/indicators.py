"""The indicators rules may use, computed incrementally on closed bars with talipp.

- `RSI`: `period` (14, 2..250); series `value`; reads the close.
- `MACD`: `fast` (12), `slow` (26), `signal` (9), each 1..250, fast < slow; series `macd`
  (the line), `signal`, `histogram`; reads the close.
- `EMA`, `SMA`: `period` (20, 1..250); series `value`; read the close.
- `BBANDS`: `period` (20, 2..250), `stddev` (2, in (0, 10]); series `middle`, `upper`,
  `lower` (population standard deviation, as TA-Lib); reads the close.
- `ATR`: `period` (14, 1..250); series `value`; reads high, low and close.
- `PRICE`: no parameter; series `close`, `open`, `high`, `low`, `volume` of the bar.

The first series named is the default one.

**Floats, kept away from money.** Indicator values are binary floats by nature. Bar prices
enter an indicator through one explicit conversion, `float(Decimal)` (the nearest double),
in `IndicatorState.update`; no indicator value ever flows back into a price, a quantity or
cash. A rule compares an indicator with a threshold or another series *as floats* (the
threshold, an exact Decimal in the rule, is converted with `float()` when the engine is
built); that comparison, in `engine.py`, is the only place where the two worlds meet.

**Warm-up.** `warmup_bars(spec)` is the number of closed bars after which a value is used
by a rule, and after which it equals TA-Lib's (the field's reference) to 1e-9 relative on
the same bars (`tests/unit/domain/signals/test_indicators.py` checks exactly that):

- `SMA(p)`, `BBANDS(p)`, `EMA(p)`: p bars; `RSI(p)`: p + 1 bars. talipp and TA-Lib define
  them identically (EMA seeded with the SMA of its first p closes; RSI with Wilder's
  smoothing seeded with the mean gain/loss of the first p changes): equal from the first value.
- `ATR(p)`: p + U(p) bars, U(p) = ceil(ln(1e-12) / ln((p - 1) / p)) (373 for p = 14).
  talipp seeds the average with the true ranges of bars 1..p counting bar 1's high - low;
  TA-Lib skips bar 1 (it has no previous close). Wilder's smoothing forgets the seed by a
  factor (p - 1) / p per bar, so after U(p) bars the seed's share is below 1e-12.
- `MACD(f, s, g)`: s + g - 1 + max(U_ema(f), U_ema(g)) bars, U_ema(n) =
  ceil(ln(1e-12) / ln((n - 1) / (n + 1))) (200 for 12/26/9). talipp seeds the fast EMA at
  bar f, TA-Lib at bar s (aligned with the slow one); the difference decays by (f-1)/(f+1)
  per bar, and the signal line, seeded from the first g MACD values, carries it on at
  (g-1)/(g+1).
- `PRICE`: 1 bar.

A crossing (`crosses_above`/`crosses_below`) also needs the bar before: one more bar.

Memory stays bounded: talipp keeps every input, so each state purges its oldest values once
it holds twice its `keep` window (results are unchanged: property-tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol

from talipp.indicators import ATR, BB, EMA, MACD, RSI, SMA
from talipp.ohlcv import OHLCV

MAX_PERIOD: Final = 250
_SEED_SHARE: Final = 1e-12


@dataclass(frozen=True, slots=True)
class ParamDef:
    """One parameter of an indicator: its default and inclusive bounds."""

    default: int | Decimal
    low: int | Decimal
    high: int | Decimal
    integer: bool = True
    low_exclusive: bool = False


_PERIOD = ParamDef(20, 1, MAX_PERIOD)

#: Every indicator, its parameters and its series (the first series is the default).
CATALOG: Final[Mapping[str, tuple[Mapping[str, ParamDef], tuple[str, ...]]]] = {
    "RSI": ({"period": ParamDef(14, 2, MAX_PERIOD)}, ("value",)),
    "MACD": (
        {
            "fast": ParamDef(12, 1, MAX_PERIOD),
            "slow": ParamDef(26, 1, MAX_PERIOD),
            "signal": ParamDef(9, 1, MAX_PERIOD),
        },
        ("macd", "signal", "histogram"),
    ),
    "EMA": ({"period": _PERIOD}, ("value",)),
    "SMA": ({"period": _PERIOD}, ("value",)),
    "BBANDS": (
        {
            "period": ParamDef(20, 2, MAX_PERIOD),
            "stddev": ParamDef(
                Decimal(2), Decimal(0), Decimal(10), integer=False, low_exclusive=True
            ),
        },
        ("middle", "upper", "lower"),
    ),
    "ATR": ({"period": ParamDef(14, 1, MAX_PERIOD)}, ("value",)),
    "PRICE": ({}, ("close", "open", "high", "low", "volume")),
}


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """An indicator with all its parameters (defaults filled in); hashable, comparable."""

    name: str
    params: tuple[tuple[str, int | Decimal], ...] = ()
    """(name, value) in the catalog's order."""

    def param(self, key: str) -> int | Decimal:
        for name, value in self.params:
            if name == key:
                return value
        raise KeyError(key)

    def period(self, key: str = "period") -> int:
        return int(self.param(key))

    @property
    def label(self) -> str:
        """`RSI(14)`, `MACD(12,26,9)`, `BBANDS(20,2)`, `PRICE`: how decisions name it."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(str(value) for _, value in self.params)})"

    @property
    def series(self) -> tuple[str, ...]:
        return CATALOG[self.name][1]

    @property
    def default_series(self) -> str:
        return CATALOG[self.name][1][0]


def make_spec(name: str, **params: int | Decimal) -> IndicatorSpec:
    """A spec with defaults for the parameters not given (trusted input: code and tests)."""
    defs = CATALOG[name][0]
    unknown = set(params) - set(defs)
    if unknown:
        raise ValueError(f"{name} has no parameter {sorted(unknown)}")
    return IndicatorSpec(name, tuple((key, params.get(key, d.default)) for key, d in defs.items()))


def _unstable(ratio: float) -> int:
    """Bars until a seed decaying by `ratio` per bar weighs less than 1e-12."""
    if ratio <= 0.0:
        return 0
    return math.ceil(math.log(_SEED_SHARE) / math.log(ratio))


def warmup_bars(spec: IndicatorSpec) -> int:
    """Closed bars needed before a value is used (see the module docstring)."""
    name = spec.name
    if name in ("SMA", "EMA", "BBANDS"):
        return spec.period()
    if name == "RSI":
        return spec.period() + 1
    if name == "ATR":
        p = spec.period()
        return p + _unstable((p - 1) / p)
    if name == "MACD":
        fast, slow, signal = spec.period("fast"), spec.period("slow"), spec.period("signal")
        decay = max(_unstable((fast - 1) / (fast + 1)), _unstable((signal - 1) / (signal + 1)))
        return slow + signal - 1 + decay
    return 1  # PRICE


class OhlcBar(Protocol):
    """What an indicator reads from a bar (`bars.Bar` fits)."""

    @property
    def open(self) -> Decimal: ...
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
    @property
    def volume(self) -> Decimal: ...


class IndicatorState:
    """One indicator on one (symbol, timeframe) stream, fed closed bars in order."""

    __slots__ = ("_impl", "_keep", "_last", "bars", "spec", "warmup")

    def __init__(self, spec: IndicatorSpec) -> None:
        self.spec = spec
        self.warmup = warmup_bars(spec)
        self.bars = 0
        self._last: OhlcBar | None = None
        self._impl: Any = _talipp(spec)
        # Enough inputs for every talipp recursion (periods + seeding checks), doubled.
        longest = max((int(v) for _, v in spec.params if isinstance(v, int)), default=1)
        self._keep = 2 * longest + 8

    @property
    def ready(self) -> bool:
        return self.bars >= self.warmup

    def update(self, bar: OhlcBar) -> None:
        """Feed the next closed bar (the one Decimal -> float conversion of prices)."""
        self.bars += 1
        self._last = bar
        impl = self._impl
        if impl is None:
            return
        if self.spec.name == "ATR":
            impl.add(OHLCV(None, float(bar.high), float(bar.low), float(bar.close)))
        else:
            impl.add(float(bar.close))
        if len(impl.input_values) >= 2 * self._keep:
            impl.purge_oldest(len(impl.input_values) - self._keep)

    def value(self, series: str) -> float | None:
        """The series' value after the last bar, or None before the warm-up is complete."""
        if not self.ready:
            return None
        impl = self._impl
        if impl is None:
            assert self._last is not None
            return float(getattr(self._last, series))
        out = impl[-1]
        if out is None:
            return None
        field = _FIELDS.get(series)
        result = out if field is None else getattr(out, field)
        return None if result is None else float(result)


# talipp's output fields of the composite indicators, by series name.
_FIELDS: Final = {
    "macd": "macd",
    "signal": "signal",
    "histogram": "histogram",
    "middle": "cb",
    "upper": "ub",
    "lower": "lb",
}


def _talipp(spec: IndicatorSpec) -> Any:
    name = spec.name
    if name == "RSI":
        return RSI(spec.period())
    if name == "EMA":
        return EMA(spec.period())
    if name == "SMA":
        return SMA(spec.period())
    if name == "ATR":
        return ATR(spec.period())
    if name == "BBANDS":
        return BB(spec.period(), float(spec.param("stddev")))
    if name == "MACD":
        return MACD(spec.period("fast"), spec.period("slow"), spec.period("signal"))
    return None  # PRICE reads the bar itself
