"""Every indicator equals TA-Lib's values after its documented warm-up (indicators.py).

Tolerance: 1e-9 relative, with an absolute floor of 1e-11 (price units) so that values
crossing zero (the MACD line, signal and histogram), where a relative difference means
nothing, compare on their rounding noise. Before the warm-up a state reports no value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from talipp.indicators import MACD

from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.indicators import (
    IndicatorSpec,
    IndicatorState,
    make_spec,
    warmup_bars,
)

from ._series import msft_bars, random_bars

REL, ABS = 1e-9, 1e-11
SERIES = {"seeded": lambda: random_bars(2000, seed=11), "msft": msft_bars}

Reference = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _cases() -> list[tuple[IndicatorSpec, str, Reference]]:
    cases: list[tuple[IndicatorSpec, str, Reference]] = []
    for p in (2, 14, 30):
        cases += [
            (make_spec("RSI", period=p), "value", lambda h, lo, c, p=p: talib.RSI(c, p)),
            (make_spec("EMA", period=p), "value", lambda h, lo, c, p=p: talib.EMA(c, p)),
            (make_spec("SMA", period=p), "value", lambda h, lo, c, p=p: talib.SMA(c, p)),
            (make_spec("ATR", period=p), "value", lambda h, lo, c, p=p: talib.ATR(h, lo, c, p)),
        ]
        for index, band in enumerate(("upper", "middle", "lower")):
            cases.append(
                (
                    make_spec("BBANDS", period=p),
                    band,
                    lambda h, lo, c, p=p, i=index: talib.BBANDS(c, p, 2.0, 2.0, 0)[i],
                )
            )
    for f, s, g in ((12, 26, 9), (5, 35, 5), (3, 10, 16), (8, 17, 9)):
        for index, part in enumerate(("macd", "signal", "histogram")):
            cases.append(
                (
                    make_spec("MACD", fast=f, slow=s, signal=g),
                    part,
                    lambda h, lo, c, f=f, s=s, g=g, i=index: talib.MACD(c, f, s, g)[i],
                )
            )
    return cases


def _arrays(bars: Sequence[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.array([float(getattr(b, k)) for b in bars]) for k in ("high", "low", "close"))  # type: ignore[return-value]


@pytest.mark.parametrize("series_name", sorted(SERIES))
@pytest.mark.parametrize(
    ("spec", "series", "reference"),
    _cases(),
    ids=lambda x: getattr(x, "label", x) if not callable(x) else "",
)
def test_indicator_equals_talib_after_its_warmup(
    series_name: str, spec: IndicatorSpec, series: str, reference: Reference
) -> None:
    bars = SERIES[series_name]()
    expected = reference(*_arrays(bars))
    state = IndicatorState(spec)
    compared = 0
    for index, bar in enumerate(bars):
        state.update(bar)
        value = state.value(series)
        if index + 1 < state.warmup:
            assert value is None
            continue
        assert value is not None
        assert not math.isnan(expected[index])
        assert math.isclose(value, expected[index], rel_tol=REL, abs_tol=ABS), (index, value)
        compared += 1
    assert compared == len(bars) - state.warmup + 1 > 1000


def test_warmups_of_the_documented_indicators() -> None:
    assert warmup_bars(make_spec("RSI")) == 15
    assert warmup_bars(make_spec("SMA", period=50)) == 50
    assert warmup_bars(make_spec("EMA", period=20)) == 20
    assert warmup_bars(make_spec("BBANDS")) == 20
    assert warmup_bars(make_spec("ATR")) == 14 + 373
    assert warmup_bars(make_spec("MACD")) == 26 + 9 - 1 + 166
    assert warmup_bars(make_spec("PRICE")) == 1


@pytest.mark.parametrize(
    ("spec", "series", "reference"),
    [
        (make_spec("ATR"), "value", lambda h, lo, c: talib.ATR(h, lo, c, 14)),
        (make_spec("MACD"), "macd", lambda h, lo, c: talib.MACD(c, 12, 26, 9)[0]),
    ],
)
def test_the_warmup_is_needed_where_talipp_and_talib_seed_differently(
    spec: IndicatorSpec, series: str, reference: Reference
) -> None:
    # talipp's first values differ from TA-Lib's by more than the tolerance: the unstable
    # period is real, not padding.
    bars = msft_bars()[:400]
    expected = reference(*_arrays(bars))
    impl = IndicatorState(spec)
    impl.warmup = 0  # read talipp's raw values from the first one on
    first_gap = None
    for index, bar in enumerate(bars):
        impl.update(bar)
        value = impl.value(series)
        if value is not None and not math.isnan(expected[index]):
            first_gap = abs(value - expected[index]) / abs(expected[index])
            break
    assert first_gap is not None
    assert first_gap > 1e-6


@settings(max_examples=25, deadline=None)
@given(
    fast=st.integers(1, 12),
    extra=st.integers(1, 20),
    signal=st.integers(1, 12),
    n=st.integers(100, 600),
)
def test_purging_old_values_never_changes_a_result(
    fast: int, extra: int, signal: int, n: int
) -> None:
    spec = make_spec("MACD", fast=fast, slow=fast + extra, signal=signal)
    bounded = IndicatorState(spec)
    bounded.warmup = 0
    unbounded = MACD(fast, fast + extra, signal)
    for bar in random_bars(n, seed=n):
        bounded.update(bar)
        unbounded.add(float(bar.close))
        raw = unbounded[-1]
        assert bounded.value("macd") == (None if raw is None else raw.macd)
        assert bounded.value("signal") == (None if raw is None else raw.signal)
    assert len(bounded._impl.input_values) < 2 * bounded._keep  # memory stays bounded
