"""`SignalEngine`: one execution's entry/exit rules over its symbols' closed bars.

Per symbol the engine keeps a phase:

- `AWAITING_ENTRY`: the entry rule is evaluated on every closed bar of its timeframe; the
  first bar on which it holds (after warm-up) *fires* an `open` decision. The caller sizes
  and checks the order; when an order intent is recorded it calls `mark_entered(symbol)`.
  If a gate blocked it, the symbol keeps waiting and the next bar on which the rule holds
  fires again.
- `ENTERED`: the exit rule (if any) is evaluated; when it holds it fires a `close`
  decision; once the closing order is recorded the caller calls `mark_exited(symbol)`,
  and re-entry waits for the entry rule to hold again. A stop-loss or any other close is
  reported the same way (`mark_exited`).
- `OUT`: exited with no entry rule to come back on (a strategy with exit rules only).

A strategy with no entry rule starts with every symbol ENTERED (it buys at approval as
before); with no rules at all the runtime needs no engine (`for_config` returns None).
An entry never fires on a bar where the exit rule holds too (outcome `met`, gate
`exit_condition`): entering a position the exit would close at once is churn.

What is recorded (`SignalDecision`): an evaluation of the rule that matters in the symbol's
phase, when it fires or when the rule's outcome (`warmup` / `met` / `not_met`) differs from
its outcome on the previous bar. Both rules are evaluated on every bar whatever the phase,
so that "previous outcome" depends only on the bars: replaying the same bars into a fresh
engine (`warm`) and restoring the phases (`restore`) gives the same later decisions as the
engine that ran live (property-tested).

`on_bar` decides in the engine's own phases (`mark_entered` / `mark_exited` / `restore`).
A caller that keeps the phases elsewhere (the runtime derives them from its committed
orders and positions) uses `evaluate`, which only moves the indicators, and derives the
decisions with `BarEvaluation.decisions(phase)`: a pure function it may call again when it
decides a step again.

No look-ahead: `evaluate` refuses a bar whose end is after `now`, and a bar not newer than
the last one of its stream; every value a decision shows comes from bars that had closed.
Indicator values are floats; thresholds are converted once with `float()` when the engine is
built, and compared as floats (see `indicators.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.decisions import (
    Action,
    ConditionResult,
    Gate,
    Outcome,
    SignalDecision,
)
from strategy_worker.domain.signals.indicators import IndicatorSpec, IndicatorState
from strategy_worker.domain.signals.parsing import parse_rules_from_config
from strategy_worker.domain.signals.rules import (
    Condition,
    Group,
    Op,
    Operand,
    RuleKind,
    RuleSet,
    StrategyRules,
)
from strategy_worker.domain.signals.timeframes import Timeframe
from strategy_worker.domain.strategy import StrategyConfig


class Phase(StrEnum):
    AWAITING_ENTRY = "awaiting_entry"
    ENTERED = "entered"
    OUT = "out"


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A condition compiled to operand indices of its timeframe's layout."""

    left: int
    op: Op
    right: int
    """Operand index, or -1 for a threshold."""
    threshold: float
    left_label: str
    right_label: str


@dataclass(frozen=True, slots=True)
class _Node:
    any_: bool
    items: tuple[_Leaf | _Node, ...]


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: RuleKind
    timeframe: Timeframe
    root: _Node
    values: tuple[tuple[str, int], ...]
    """(label, operand index) of every series the rule reads."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """The indicators and operands every stream of one timeframe computes."""

    specs: tuple[IndicatorSpec, ...]
    operands: tuple[tuple[int, str], ...]
    """(index into specs, series) per operand."""


@dataclass(slots=True)
class _Stream:
    """One (symbol, timeframe): its indicators and the operand values of its last two bars."""

    layout: _Layout
    states: list[IndicatorState]
    last_start: datetime | None = None
    current: list[float | None] = field(default_factory=list)
    previous: list[float | None] = field(default_factory=list)

    def update(self, bar: Bar) -> None:
        states = self.states
        for state in states:
            state.update(bar)
        self.previous = self.current
        self.current = [states[i].value(series) for i, series in self.layout.operands]
        self.last_start = bar.start


@dataclass(frozen=True, slots=True)
class _Evaluation:
    state: Outcome
    """MET, NOT_MET or WARMUP."""
    leaves: tuple[ConditionResult, ...]
    values: Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class BarEvaluation:
    """Both rules of one symbol on one closed bar, as `SignalEngine.evaluate` found them:
    independent of the symbol's phase, so the decisions can be derived for any phase, and
    as often as needed (`decisions`)."""

    bar: Bar
    now: datetime
    rules: tuple[tuple[RuleKind, _Evaluation, bool], ...]
    """(rule, its evaluation, whether its outcome differs from the previous bar's)."""
    exit_met: bool
    """The exit rule held on its last evaluation (an entry never fires then)."""

    def decisions(self, phase: Phase) -> list[SignalDecision]:
        """The decisions to record in `phase` (0..2): the rule that matters in the phase
        (entry while awaiting, exit while entered), when it fires or changes its outcome."""
        out: list[SignalDecision] = []
        for kind, evaluation, changed in self.rules:
            decision = self._decide(kind, evaluation, changed, phase)
            if decision is not None:
                out.append(decision)
        return out

    def _decide(
        self, kind: RuleKind, ev: _Evaluation, changed: bool, phase: Phase
    ) -> SignalDecision | None:
        relevant = (kind is RuleKind.ENTRY and phase is Phase.AWAITING_ENTRY) or (
            kind is RuleKind.EXIT and phase is Phase.ENTERED
        )
        if not relevant:
            return None
        outcome, action, gate = ev.state, None, None
        if ev.state is Outcome.WARMUP:
            gate = Gate.WARMUP
        elif ev.state is Outcome.MET:
            if kind is RuleKind.ENTRY and self.exit_met:
                gate = Gate.EXIT_CONDITION
            else:
                outcome = Outcome.FIRED
                action = Action.OPEN if kind is RuleKind.ENTRY else Action.CLOSE
        if outcome is not Outcome.FIRED and not changed:
            return None
        bar = self.bar
        return SignalDecision(
            symbol=bar.symbol,
            timeframe=bar.timeframe,
            bar_start=bar.start,
            rule=kind,
            outcome=outcome,
            action=action,
            decided_at=max(self.now, bar.end),
            close=bar.close,
            conditions=ev.leaves,
            values=ev.values,
            gate=gate,
        )


class SignalEngine:
    """Entry/exit signals for one execution (pure, synchronous, deterministic)."""

    def __init__(self, rules: StrategyRules, symbols: Iterable[str]) -> None:
        self._rules = {
            kind: r
            for kind, r in ((RuleKind.ENTRY, rules.entry), (RuleKind.EXIT, rules.exit))
            if r is not None
        }
        self.rules = rules
        self.symbols: tuple[str, ...] = tuple(sorted(set(symbols)))
        operands: dict[Timeframe, dict[Operand, int]] = {}
        for rule in self._rules.values():
            index = operands.setdefault(rule.timeframe, {})
            for operand in rule.operands():
                index.setdefault(operand, len(index))
        self._layouts: dict[Timeframe, _Layout] = {}
        for tf, index in operands.items():
            specs = tuple(dict.fromkeys(op.spec for op in index))
            self._layouts[tf] = _Layout(
                specs, tuple((specs.index(op.spec), op.series) for op in index)
            )
        self._compiled = tuple(
            _compile(kind, rule, operands[rule.timeframe]) for kind, rule in self._rules.items()
        )
        self._streams: dict[tuple[str, Timeframe], _Stream] = {
            (symbol, tf): _Stream(layout, [IndicatorState(spec) for spec in layout.specs])
            for symbol in self.symbols
            for tf, layout in self._layouts.items()
        }
        start = Phase.AWAITING_ENTRY if RuleKind.ENTRY in self._rules else Phase.ENTERED
        self._phase: dict[str, Phase] = dict.fromkeys(self.symbols, start)
        self._last: dict[tuple[str, RuleKind], Outcome] = {}
        self.ignored_bars = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_config(cls, config: StrategyConfig) -> SignalEngine | None:
        """The engine for a parsed strategy, or None when it has no rules (trades as before)."""
        if config.entry_rules is None and config.exit_rules is None:
            return None
        return cls(StrategyRules(config.entry_rules, config.exit_rules), config.symbols)

    @classmethod
    def for_stored_config(cls, config: Mapping[str, Any]) -> SignalEngine | Rejection | None:
        """The engine for a stored `config` JSON (`StrategyConfig.to_json()`), or None."""
        rules = parse_rules_from_config(config)
        if isinstance(rules, Rejection):
            return rules
        if rules.entry is None and rules.exit is None:
            return None
        return cls(rules, [str(symbol) for symbol in config.get("symbols", ())])

    # ------------------------------------------------------------------ what it needs

    @property
    def timeframes(self) -> frozenset[Timeframe]:
        return frozenset(self._layouts)

    def warmup_bars(self, timeframe: Timeframe) -> int:
        """Closed bars per symbol before the rules on `timeframe` can decide (the history
        to load at start): the longest indicator warm-up, plus one bar for a crossing."""
        longest = 0
        for rule in self._rules.values():
            if rule.timeframe != timeframe:
                continue
            crossing = any(c.op.crossing for c in rule.conditions())
            for operand in rule.operands():
                longest = max(longest, IndicatorState(operand.spec).warmup + int(crossing))
        return longest

    def history_needed(self) -> dict[Timeframe, int]:
        """Bars per symbol to load for warm-up, by timeframe (see `warmup_bars`)."""
        return {tf: self.warmup_bars(tf) for tf in sorted(self._layouts)}

    def wants(self, bar: Bar) -> bool:
        """True when the bar is of a symbol and timeframe this engine reads."""
        return (bar.symbol, bar.timeframe) in self._streams

    # ------------------------------------------------------------------ phases

    def phase(self, symbol: str) -> Phase:
        return self._phase[symbol]

    def entered(self, symbol: str) -> bool:
        """True when the symbol's position is open as far as signals are concerned (only
        entered symbols keep a rebalancing target)."""
        return self._phase.get(symbol) is Phase.ENTERED

    def awaiting_entry(self) -> tuple[str, ...]:
        """Symbols whose first (or next) buy waits for the entry rule, sorted."""
        return tuple(s for s in self.symbols if self._phase[s] is Phase.AWAITING_ENTRY)

    def mark_entered(self, symbol: str) -> None:
        """The opening order of `symbol` was recorded: evaluate its exit rule from now on."""
        self._phase[symbol] = Phase.ENTERED

    def mark_exited(self, symbol: str) -> None:
        """`symbol`'s position was closed (exit signal, stop-loss, operator): wait for the
        entry rule again (or stay out without one)."""
        entry = RuleKind.ENTRY in self._rules
        self._phase[symbol] = Phase.AWAITING_ENTRY if entry else Phase.OUT

    def restore(self, entered: Iterable[str]) -> None:
        """Set the phases after a rebuild: exactly `entered` are ENTERED (symbols with an
        open position or an opening order in flight; without an entry rule, every symbol not
        closed by an exit signal), the others await entry (or are OUT without an entry rule)."""
        held = set(entered)
        for symbol in self.symbols:
            if symbol in held:
                self.mark_entered(symbol)
            else:
                self.mark_exited(symbol)

    # ------------------------------------------------------------------ bars

    def warm(self, bars: Iterable[Bar]) -> None:
        """Replay stored closed bars (oldest first): indicators and previous outcomes move
        as they did live, phases do not, nothing is decided."""
        for bar in sorted(bars, key=lambda b: (b.end, b.symbol, b.timeframe)):
            self.evaluate(bar, now=bar.end)

    def on_bar(self, bar: Bar, *, now: datetime) -> list[SignalDecision]:
        """Feed one closed bar at time `now`; returns the decisions to record (0..2) in the
        symbol's current phase."""
        evaluation = self.evaluate(bar, now=now)
        return [] if evaluation is None else evaluation.decisions(self._phase[bar.symbol])

    def evaluate(self, bar: Bar, *, now: datetime) -> BarEvaluation | None:
        """Feed one closed bar at time `now`: the indicators and each rule's previous
        outcome move on; returns both rules' evaluations on it, from which
        `BarEvaluation.decisions(phase)` derives the decisions in any phase (a caller that
        may decide twice, e.g. a step decided again, evaluates once). None when the engine
        does not read the bar (another symbol or timeframe, not newer than its stream's
        last bar, or not closed at `now`)."""
        stream = self._streams.get((bar.symbol, bar.timeframe))
        if stream is None:
            return None
        if bar.end > now or (stream.last_start is not None and bar.start <= stream.last_start):
            self.ignored_bars += 1
            return None
        stream.update(bar)
        evaluations = {
            rule.kind: self._evaluate(rule, stream)
            for rule in self._compiled
            if rule.timeframe == bar.timeframe
        }
        rules: list[tuple[RuleKind, _Evaluation, bool]] = []
        for kind, evaluation in evaluations.items():  # both first: an entry reads the exit's
            key = (bar.symbol, kind)
            rules.append((kind, evaluation, self._last.get(key) is not evaluation.state))
            self._last[key] = evaluation.state
        exit_met = self._last.get((bar.symbol, RuleKind.EXIT)) is Outcome.MET
        return BarEvaluation(bar, now, tuple(rules), exit_met)

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, rule: _Rule, stream: _Stream) -> _Evaluation:
        leaves: list[ConditionResult] = []
        result = _node(rule.root, stream.current, stream.previous, leaves)
        state = (
            Outcome.WARMUP
            if any(leaf.result is None for leaf in leaves)
            else (Outcome.MET if result else Outcome.NOT_MET)
        )
        current = stream.current
        return _Evaluation(state, tuple(leaves), {label: current[i] for label, i in rule.values})


def _compile(kind: RuleKind, rule: RuleSet, index: Mapping[Operand, int]) -> _Rule:
    def node(group: Group) -> _Node:
        return _Node(
            group.mode == "any",
            tuple(node(item) if isinstance(item, Group) else leaf(item) for item in group.items),
        )

    def leaf(cond: Condition) -> _Leaf:
        right = cond.right
        if isinstance(right, Decimal):
            # The one conversion of a rule's threshold: compared as a float from here on.
            return _Leaf(
                index[cond.left], cond.op, -1, float(right), cond.left.label, format(right, "f")
            )
        return _Leaf(index[cond.left], cond.op, index[right], 0.0, cond.left.label, right.label)

    values = tuple((op.label, index[op]) for op in rule.operands())
    return _Rule(kind, rule.timeframe, node(rule.root), values)


def _node(
    node: _Node,
    current: Sequence[float | None],
    previous: Sequence[float | None],
    leaves: list[ConditionResult],
) -> bool:
    # Every leaf is evaluated (no short cut), so a decision shows all of them.
    results = [
        _node(item, current, previous, leaves)
        if isinstance(item, _Node)
        else _leaf(item, current, previous, leaves)
        for item in node.items
    ]
    return any(results) if node.any_ else all(results)


def _leaf(
    leaf: _Leaf,
    current: Sequence[float | None],
    previous: Sequence[float | None],
    leaves: list[ConditionResult],
) -> bool:
    left = current[leaf.left]
    right = leaf.threshold if leaf.right < 0 else current[leaf.right]
    before: tuple[float | None, float | None] | None = None
    result: bool | None = None
    if leaf.op.crossing:
        if previous:
            prev_left = previous[leaf.left]
            prev_right = leaf.threshold if leaf.right < 0 else previous[leaf.right]
        else:
            prev_left = prev_right = None
        before = (prev_left, prev_right)
        if (
            left is not None
            and right is not None
            and prev_left is not None
            and (prev_right is not None)
        ):
            result = _crosses(leaf.op, prev_left, prev_right, left, right)
    elif left is not None and right is not None:
        result = _compare(leaf.op, left, right)
    leaves.append(
        ConditionResult(
            leaf.left_label, str(leaf.op), leaf.right_label, left, right, before, result
        )
    )
    return bool(result)


def _compare(op: Op, left: float, right: float) -> bool:
    if op is Op.LT:
        return left < right
    if op is Op.LE:
        return left <= right
    if op is Op.GT:
        return left > right
    return left >= right


def _crosses(op: Op, prev_left: float, prev_right: float, left: float, right: float) -> bool:
    if op is Op.CROSSES_ABOVE:
        return prev_left <= prev_right and left > right
    return prev_left >= prev_right and left < right
