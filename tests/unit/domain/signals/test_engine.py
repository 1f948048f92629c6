"""SignalEngine: entry gates the first buy, exit closes, re-entry waits, no look-ahead, and a
rebuilt engine decides exactly as the one that ran live."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.decisions import Action, Gate, Outcome, SignalDecision
from strategy_worker.domain.signals.engine import Phase, SignalEngine
from strategy_worker.domain.signals.parsing import parse_rule_set
from strategy_worker.domain.signals.rules import RuleKind, RuleSet, StrategyRules
from strategy_worker.domain.strategy import ApprovedStrategy, parse_strategy_message

from .._factories import sample
from ._series import msft_bars, random_bars

ISSUE_ENTRY = {
    "timeframe": "1d",
    "all": [
        {"indicator": "RSI", "period": 14, "op": "<", "value": 40},
        {"indicator": "MACD", "fast": 12, "slow": 26, "signal": 9, "op": ">", "value": "signal"},
    ],
}
FAST_ENTRY = {
    "all": [
        {"indicator": "RSI", "period": 5, "op": "<", "value": 55},
        {"indicator": "PRICE", "op": "crosses_above", "value": {"indicator": "EMA", "period": 4}},
    ]
}
FAST_EXIT = {"any": [{"indicator": "RSI", "period": 5, "op": ">", "value": 65}]}


def _rules(kind: RuleKind, obj: dict[str, Any]) -> RuleSet:
    parsed = parse_rule_set(obj, kind=kind, strategy_type="MOMENTUM", path="r")
    assert isinstance(parsed, RuleSet)
    return parsed


def _engine(
    entry: Any = FAST_ENTRY, exit_: Any = FAST_EXIT, symbols: Sequence[str] = ("AAPL",)
) -> SignalEngine:
    return SignalEngine(
        StrategyRules(
            entry=None if entry is None else _rules(RuleKind.ENTRY, entry),
            exit=None if exit_ is None else _rules(RuleKind.EXIT, exit_),
        ),
        symbols,
    )


def _drive(engine: SignalEngine, bars: Sequence[Bar]) -> list[SignalDecision]:
    """Feed bars at their close time; act on every fired decision at once (no gate)."""
    out: list[SignalDecision] = []
    for bar in bars:
        for decision in engine.on_bar(bar, now=bar.end):
            out.append(decision)
            if decision.action is Action.OPEN:
                engine.mark_entered(decision.symbol)
            elif decision.action is Action.CLOSE:
                engine.mark_exited(decision.symbol)
    return out


# ------------------------------------------------------------------ semantics


def test_first_entry_fires_on_the_first_bar_where_the_issues_rule_holds_after_warmup() -> None:
    # Arrange: the issue's explicit form on real MSFT days; the bar computed with TA-Lib.
    bars = [b for b in msft_bars()]
    close = np.array([float(b.close) for b in bars])
    rsi = talib.RSI(close, 14)
    macd, signal, _ = talib.MACD(close, 12, 26, 9)
    engine = _engine(ISSUE_ENTRY, None, symbols=("MSFT",))
    warm = engine.warmup_bars(bars[0].timeframe)
    assert warm == 200  # MACD(12,26,9)'s documented warm-up dominates RSI(14)'s 15
    expected = next(i for i in range(warm - 1, len(bars)) if rsi[i] < 40 and macd[i] > signal[i])
    # Act
    decisions: list[SignalDecision] = []
    for bar in bars[: expected + 1]:
        decisions += engine.on_bar(bar, now=bar.end)
    # Assert: warm-up, then not met, then fired on exactly that bar, nothing fired before.
    assert decisions[0].outcome is Outcome.WARMUP
    assert decisions[0].gate is Gate.WARMUP
    assert decisions[0].bar_start == bars[0].start
    fired = [d for d in decisions if d.outcome is Outcome.FIRED]
    assert [d.bar_start for d in fired] == [bars[expected].start]
    assert fired[0].action is Action.OPEN
    assert fired[0].close == bars[expected].close
    assert fired[0].values["RSI(14)"] < 40
    assert [c.result for c in fired[0].conditions] == [True, True]
    assert abs(fired[0].values["RSI(14)"] - rsi[expected]) < 1e-9
    assert engine.awaiting_entry() == ("MSFT",)


def test_a_gated_entry_fires_again_on_the_next_bar_where_it_holds() -> None:
    engine = _engine(FAST_ENTRY, None)
    fired = []
    for bar in random_bars(300, seed=3):
        fired += [d for d in engine.on_bar(bar, now=bar.end) if d.outcome is Outcome.FIRED]
    # Nobody called mark_entered: every bar where the entry holds fires.
    assert len(fired) >= 2
    assert engine.phase("AAPL") is Phase.AWAITING_ENTRY


def test_exit_closes_and_re_entry_waits_for_the_entry_rule_again() -> None:
    decisions = _drive(_engine(), random_bars(600, seed=5))
    actions = [d.action for d in decisions if d.action is not None]
    assert actions[:4] == [Action.OPEN, Action.CLOSE, Action.OPEN, Action.CLOSE]
    assert all(a is not b for a, b in itertools.pairwise(actions))  # alternate
    for decision in decisions:
        if decision.action is Action.CLOSE:
            assert decision.rule is RuleKind.EXIT
            assert decision.values["RSI(5)"] > 65


def test_without_entry_rules_symbols_start_entered_and_stay_out_after_an_exit() -> None:
    engine = _engine(None, FAST_EXIT, symbols=("AAPL", "MSFT"))
    assert engine.entered("AAPL")
    assert engine.awaiting_entry() == ()
    decisions = _drive(engine, random_bars(200, seed=9))
    assert [d.action for d in decisions if d.action] == [Action.CLOSE]
    assert engine.phase("AAPL") is Phase.OUT
    assert engine.entered("MSFT")  # it got no bar


def test_an_entry_never_fires_on_a_bar_where_the_exit_holds_too() -> None:
    both = {"all": [{"indicator": "RSI", "period": 3, "op": ">", "value": 50}]}
    engine = _engine(both, both)
    decisions = _drive(engine, random_bars(100, seed=1))
    assert not [d for d in decisions if d.outcome is Outcome.FIRED]
    held = [d for d in decisions if d.outcome is Outcome.MET]
    assert held
    assert all(d.gate is Gate.EXIT_CONDITION for d in held)


def test_a_bar_not_closed_at_now_or_not_newer_than_the_last_is_ignored() -> None:
    engine = _engine()
    first, second = random_bars(2, seed=2)
    assert engine.on_bar(first, now=first.end - timedelta(seconds=1)) == []
    assert engine.on_bar(first, now=first.end)  # warm-up decision recorded
    assert engine.on_bar(first, now=second.end) == []  # repeated
    assert engine.ignored_bars == 2


def test_the_engine_comes_from_a_parsed_or_a_stored_config() -> None:
    msg = sample()
    msg["config"]["exit_rules"] = FAST_EXIT
    parsed = parse_strategy_message(json.dumps(msg))
    assert isinstance(parsed, ApprovedStrategy)
    live = SignalEngine.for_config(parsed.config)
    stored = SignalEngine.for_stored_config(json.loads(json.dumps(parsed.config.to_json())))
    assert isinstance(live, SignalEngine)
    assert isinstance(stored, SignalEngine)
    assert live.rules == stored.rules
    assert live.symbols == stored.symbols == ("AAPL", "GOOGL", "MSFT")
    assert live.awaiting_entry() == ("AAPL", "GOOGL", "MSFT")
    del msg["config"]["entry_rules"], msg["config"]["exit_rules"]
    plain = parse_strategy_message(json.dumps(msg))
    assert isinstance(plain, ApprovedStrategy)
    assert SignalEngine.for_config(plain.config) is None


def test_decision_details_keep_floats_as_numbers_and_the_close_exact() -> None:
    decisions = _drive(_engine(), random_bars(80, seed=4))
    details = decisions[-1].details()
    assert isinstance(details["close"], Decimal)
    assert all(v is None or isinstance(v, float) for v in details["values"].values())
    assert details["conditions"][0]["op"] in {"<", ">", "crosses_above"}


# ------------------------------------------------------------------ properties


def _interleaved(seed: int, n: int) -> list[Bar]:
    bars = random_bars(n, seed=seed) + random_bars(n, seed=seed + 1, symbol="MSFT")
    return sorted(bars, key=lambda b: (b.end, b.symbol))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(20, 160),
    cut=st.floats(0, 1),
    tail_seed=st.integers(0, 99),
)
def test_no_look_ahead_decisions_up_to_a_time_ignore_every_later_bar(
    seed: int, n: int, cut: float, tail_seed: int
) -> None:
    bars = _interleaved(seed, n)
    horizon = bars[int(cut * (len(bars) - 1))].end
    other_future = [b for b in bars if b.end <= horizon] + [
        b for b in _interleaved(tail_seed + 20_000, n) if b.end > horizon
    ]
    ours = _drive(_engine(symbols=("AAPL", "MSFT")), bars)
    theirs = _drive(_engine(symbols=("AAPL", "MSFT")), other_future)
    early = [d for d in ours if d.decided_at <= horizon]
    assert early == [d for d in theirs if d.decided_at <= horizon]
    for decision in ours:
        assert decision.bar_end <= decision.decided_at


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 160), cut=st.floats(0, 1))
def test_an_engine_rebuilt_from_stored_bars_decides_as_the_live_one(
    seed: int, n: int, cut: float
) -> None:
    bars = _interleaved(seed, n)
    k = int(cut * len(bars))
    live = _engine(symbols=("AAPL", "MSFT"))
    _drive(live, bars[:k])
    rebuilt = _engine(symbols=("AAPL", "MSFT"))
    rebuilt.warm(bars[:k])
    rebuilt.restore(s for s in live.symbols if live.entered(s))
    assert _drive(rebuilt, bars[k:]) == _drive(live, bars[k:])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 200))
def test_replaying_the_same_bars_gives_the_same_decisions(seed: int, n: int) -> None:
    bars = _interleaved(seed, n)
    assert _drive(_engine(symbols=("AAPL", "MSFT")), bars) == _drive(
        _engine(symbols=("AAPL", "MSFT")), bars
    )


def test_history_needed_names_the_bars_to_load_per_timeframe() -> None:
    engine = _engine(
        ISSUE_ENTRY,
        {
            "timeframe": "1h",
            "all": [{"indicator": "SMA", "period": 10, "op": "crosses_below", "value": "close"}],
        },
    )
    assert {str(tf): n for tf, n in engine.history_needed().items()} == {"1h": 11, "1d": 200}


def test_evaluate_then_decisions_in_a_phase_equal_on_bar_in_that_phase_every_time() -> None:
    # The runtime keeps phases itself and may decide a step twice (a refused commit):
    # the evaluation of a bar must give the same decisions however often it is asked.
    live, split = _engine(), _engine()
    phase = Phase.AWAITING_ENTRY
    for bar in random_bars(400, seed=11):
        expected = live.on_bar(bar, now=bar.end)
        evaluation = split.evaluate(bar, now=bar.end)
        assert evaluation is not None
        assert evaluation.decisions(phase) == expected
        assert evaluation.decisions(phase) == expected  # asked again: the same
        for decision in expected:
            if decision.action is Action.OPEN:
                live.mark_entered(decision.symbol)
                phase = Phase.ENTERED
            elif decision.action is Action.CLOSE:
                live.mark_exited(decision.symbol)
                phase = Phase.AWAITING_ENTRY
    assert phase is live.phase("AAPL")
    assert split.evaluate(random_bars(1, seed=11)[0], now=random_bars(1, seed=11)[0].end) is None
