"""The `strategy.execution.signal_decision` event: exact close, indicator values as numbers."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from strategy_worker.domain.signals.decisions import Action, Gate, Outcome
from strategy_worker.domain.signals.engine import SignalEngine
from strategy_worker.domain.signals.parsing import parse_rule_set
from strategy_worker.domain.signals.rules import RuleKind, RuleSet, StrategyRules
from strategy_worker.domain.signals.synthetic import random_bars
from strategy_worker.messages import EventContext, EventType, encode_event, signal_decision

CTX = EventContext(execution_id=uuid.uuid4(), strategy_id=uuid.uuid4(), user_id=uuid.uuid4())


def _fired_decision():  # type: ignore[no-untyped-def]
    rule = parse_rule_set(
        {"all": [{"indicator": "RSI", "period": 3, "op": "crosses_above", "value": 50}]},
        kind=RuleKind.ENTRY,
        strategy_type="MOMENTUM",
        path="r",
    )
    assert isinstance(rule, RuleSet)
    engine = SignalEngine(StrategyRules(entry=rule), ["AAPL"])
    for bar in random_bars(200, seed=2):
        for decision in engine.on_bar(bar, now=bar.end):
            if decision.outcome is Outcome.FIRED:
                return decision
    raise AssertionError("the rule never fired")


def test_the_event_carries_the_decision_with_exact_money_and_numeric_values() -> None:
    decision = _fired_decision().with_gate(Gate.CASH)
    event = signal_decision(CTX, at=decision.decided_at, decision=decision)
    wire = json.loads(encode_event(event), parse_float=Decimal)
    assert wire["type"] == EventType.SIGNAL_DECISION == "strategy.execution.signal_decision"
    assert wire["execution_id"] == str(CTX.execution_id)
    assert (wire["symbol"], wire["timeframe"], wire["rule"]) == ("AAPL", "1d", "entry")
    assert (wire["outcome"], wire["action"], wire["gate"]) == ("fired", str(Action.OPEN), "cash")
    assert Decimal(wire["close"]) == decision.close
    (condition,) = wire["conditions"]
    assert condition["op"] == "crosses_above"
    assert condition["right"] == "50"
    assert float(condition["left_value"]) == decision.conditions[0].left_value
    assert condition["result"] is True
    assert len(condition["previous"]) == 2
    assert float(wire["values"]["RSI(3)"]) == decision.values["RSI(3)"]
    assert wire["bar_end"] > wire["bar_start"]
