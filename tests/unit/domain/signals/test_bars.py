"""Timeframes, bar validation, the bar builder and the acceptance policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.acceptance import BarGate, IgnoreReason
from strategy_worker.domain.signals.bars import Bar, make_bar
from strategy_worker.domain.signals.builder import BarBuilder
from strategy_worker.domain.signals.timeframes import parse_timeframe, timeframe

from ._series import random_bars

M1, M5, H1, H4, D1, W1 = (timeframe(t) for t in ("1m", "5m", "1h", "4h", "1d", "1w"))
T = datetime(2024, 1, 2, 14, 30, 17, tzinfo=UTC)  # a Tuesday


def test_timeframes_have_one_spelling_each() -> None:
    assert [parse_timeframe(t) for t in ("60m", "24h", "2d", "0m", "1M", "5", 5)] == [None] * 7
    assert sorted([D1, M5, H1]) == [M5, H1, D1]
    assert str(H4) == "4h"


def test_bar_starts_align_in_utc_and_weeks_start_on_monday() -> None:
    assert M5.floor(T) == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    assert H4.floor(T) == datetime(2024, 1, 2, 12, 0, tzinfo=UTC)
    assert D1.floor(T) == datetime(2024, 1, 2, tzinfo=UTC)
    assert W1.floor(T) == datetime(2024, 1, 1, tzinfo=UTC)  # Monday
    new_york = T.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert D1.floor(new_york) == D1.floor(T)
    assert H1.end(H1.floor(T)) == datetime(2024, 1, 2, 15, 0, tzinfo=UTC)


def _bar(**changes: object) -> Bar | Rejection:
    fields: dict[str, object] = {
        "symbol": "AAPL",
        "timeframe": D1,
        "start": datetime(2024, 1, 2, tzinfo=UTC),
        "open": Decimal("10"),
        "high": Decimal("12"),
        "low": Decimal("9"),
        "close": Decimal("11"),
        "volume": Decimal("100"),
    }
    fields.update(changes)
    return make_bar(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"symbol": "aapl"}, "invalid_symbol", "symbol"),
        ({"start": datetime(2024, 1, 2, 1, tzinfo=UTC)}, "misaligned_start", "start"),
        ({"start": datetime(2024, 1, 2)}, "invalid_timestamp", "start"),  # noqa: DTZ001
        ({"open": Decimal(0)}, "invalid_price", "open"),
        ({"close": Decimal("NaN")}, "invalid_price", "close"),
        ({"high": Decimal("10.5")}, "inconsistent_ohlc", "high"),
        ({"low": Decimal("10.5")}, "inconsistent_ohlc", "low"),
        ({"volume": Decimal(-1)}, "invalid_volume", "volume"),
    ],
)
def test_malformed_bars_are_rejected_with_a_code_and_field(
    changes: dict[str, object], code: str, field: str
) -> None:
    rejected = _bar(**changes)
    assert isinstance(rejected, Rejection)
    assert (rejected.code, rejected.path) == (code, field)


def test_a_start_in_another_zone_is_stored_in_utc() -> None:
    start = datetime(2024, 1, 2, 1, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    bar = _bar(start=start, timeframe=H1)
    assert isinstance(bar, Bar)
    assert bar.start == datetime(2024, 1, 2, 0, tzinfo=UTC)
    assert bar.start.tzinfo is UTC


# ------------------------------------------------------------------ builder


def _d(text: str) -> Decimal:
    return Decimal(text)


def test_builder_makes_ohlc_from_ticks_and_closes_on_the_next_ticks_time() -> None:
    builder = BarBuilder([M1, M5])
    t0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    for seconds, price in ((0, "10"), (20, "12"), (40, "9"), (59, "11")):
        assert builder.on_tick("AAPL", _d(price), t0 + timedelta(seconds=seconds)) == []
    (closed,) = builder.on_tick("AAPL", _d("11.5"), t0 + timedelta(minutes=1))
    assert (closed.timeframe, closed.start) == (M1, t0)
    assert (closed.open, closed.high, closed.low, closed.close) == (10, 12, 9, 11)
    assert closed.volume == 0
    assert builder.forming("AAPL", M5) is not None


def test_a_quiet_symbols_bar_closes_on_the_clock() -> None:
    builder = BarBuilder([M1])
    builder.on_tick("AAPL", _d("10"), T)
    assert builder.advance(M1.end(M1.floor(T)) - timedelta(microseconds=1)) == []
    (closed,) = builder.advance(M1.end(M1.floor(T)))
    assert closed.close == 10
    assert builder.advance(T + timedelta(hours=1)) == []  # once


def test_late_and_invalid_ticks_are_counted_and_ignored() -> None:
    builder = BarBuilder([M1])
    builder.on_tick("AAPL", _d("10"), T)
    builder.advance(T + timedelta(minutes=1))
    assert builder.on_tick("AAPL", _d("99"), T) == []  # its bar already closed
    assert builder.on_tick("AAPL", _d("-1"), T + timedelta(minutes=2)) == []
    assert builder.on_tick("AAPL", _d("10"), datetime(2024, 1, 2)) == []  # noqa: DTZ001
    assert (builder.late_ticks, builder.invalid_ticks) == (1, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3 * 3600), st.integers(1, 10_000)), min_size=1, max_size=80)
)
def test_bars_built_tick_by_tick_equal_bars_built_from_the_whole_series(
    ticks: list[tuple[int, int]],
) -> None:
    ticks.sort()
    builder = BarBuilder([M5, H1])
    base = datetime(2024, 1, 2, tzinfo=UTC)
    bars: list[Bar] = []
    for offset, cents in ticks:
        bars += builder.on_tick("AAPL", Decimal(cents) / 100, base + timedelta(seconds=offset))
    bars += builder.advance(base + timedelta(days=1))
    for tf in (M5, H1):
        groups: dict[datetime, list[Decimal]] = {}
        for offset, cents in ticks:
            groups.setdefault(tf.floor(base + timedelta(seconds=offset)), []).append(
                Decimal(cents) / 100
            )
        mine = {b.start: b for b in bars if b.timeframe == tf}
        assert set(mine) == set(groups)
        for start, prices in groups.items():
            bar = mine[start]
            assert (bar.open, bar.high, bar.low, bar.close) == (
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
            )
    ends = [b.end for b in bars]
    assert ends == sorted(ends)


# ------------------------------------------------------------------ acceptance


def test_gate_sorts_a_batch_and_ignores_duplicates_corrections_late_and_unclosed_bars() -> None:
    a, b, c, d = random_bars(4, seed=1)
    gate = BarGate()
    first = gate.accept([b, a], now=d.end)
    assert first.accepted == (a, b)
    corrected = Bar(**{**_fields(b), "close": b.close + 1})
    later = gate.accept([b, corrected, a, c, d], now=c.end)
    assert later.accepted == (c,)
    reasons = sorted(str(i.reason) for i in later.ignored)
    # b was superseded in the batch by its correction, which comes after b was used.
    assert reasons == ["correction_after_use", "duplicate", "not_closed", "superseded"]
    assert gate.counts[IgnoreReason.DUPLICATE] == 1


def test_a_correction_in_the_same_batch_replaces_the_bar_before_use() -> None:
    (a,) = random_bars(1, seed=1)
    fixed = Bar(**{**_fields(a), "close": a.close + 1})
    result = BarGate().accept([a, fixed], now=a.end)
    assert result.accepted == (fixed,)
    assert [str(i.reason) for i in result.ignored] == ["superseded"]


def test_an_older_unknown_bar_is_late_and_a_seeded_history_counts_as_seen() -> None:
    bars = random_bars(5, seed=2)
    gate = BarGate()
    gate.seed(bars[:3])
    result = gate.accept([bars[2], bars[4]], now=bars[4].end)
    assert result.accepted == (bars[4],)
    assert [str(i.reason) for i in result.ignored] == ["duplicate"]
    late = gate.accept([bars[3]], now=bars[4].end)
    assert [str(i.reason) for i in late.ignored] == ["late"]
    assert gate.last_start("AAPL", D1) == bars[4].start


def _fields(bar: Bar) -> dict[str, object]:
    return {
        k: getattr(bar, k)
        for k in ("symbol", "timeframe", "start", "open", "high", "low", "close", "volume")
    }


def test_an_announcement_batch_ticks_every_symbol_then_closes_by_the_clock() -> None:
    builder = BarBuilder([M1])
    builder.on_prices({"MSFT": _d("20"), "AAPL": _d("10")}, T)
    closed = builder.on_prices({"AAPL": _d("11")}, T + timedelta(minutes=1))
    assert [(b.symbol, b.close) for b in closed] == [("AAPL", 10), ("MSFT", 20)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 29), st.booleans(), st.sampled_from(["AAPL", "MSFT"])), max_size=60
    ),
    st.integers(1, 5),
)
def test_the_gate_accounts_for_every_bar_and_each_stream_only_moves_forward(
    picks: list[tuple[int, bool, str]], batches: int
) -> None:
    series = {s: random_bars(30, seed=3, symbol=s) for s in ("AAPL", "MSFT")}
    arrivals = [
        Bar(**{**_fields(series[s][i]), "close": series[s][i].close + 1})
        if corrected
        else series[s][i]
        for i, corrected, s in picks
    ]
    gate = BarGate()
    now = series["AAPL"][-1].end
    accepted: list[Bar] = []
    ignored = 0
    size = max(1, len(arrivals) // batches)
    for start in range(0, len(arrivals), size):
        result = gate.accept(arrivals[start : start + size], now=now)
        accepted += result.accepted
        ignored += len(result.ignored)
    assert len(accepted) + ignored == len(arrivals)
    for symbol in ("AAPL", "MSFT"):
        starts = [b.start for b in accepted if b.symbol == symbol]
        assert starts == sorted(set(starts))
