"""Signal decisions in the runtime's commit (`ExecutionWrite.decisions`, issue 14): written
in the same transaction as the rest of the write, for many executions in one statement,
skipped with the write when its fence fails, and never twice for one bar and rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.market_data import MarketDataStore
from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.signals.decisions import (
    Action,
    ConditionResult,
    Gate,
    Outcome,
    SignalDecision,
)
from strategy_worker.domain.signals.rules import RuleKind
from strategy_worker.domain.signals.timeframes import timeframe
from strategy_worker.store import Fence

from .factories import create, intent, new_execution, outbox_event, step

pytestmark = pytest.mark.integration

DAY = timeframe("1d")
BAR = datetime(2024, 1, 2, tzinfo=UTC)


def decision(symbol: str = "AAPL", *, day: int = 0, gate: Gate | None = None) -> SignalDecision:
    start = BAR + timedelta(days=day)
    return SignalDecision(
        symbol=symbol,
        timeframe=DAY,
        bar_start=start,
        rule=RuleKind.ENTRY,
        outcome=Outcome.FIRED,
        action=Action.OPEN,
        decided_at=start + timedelta(days=1),
        close=Decimal("185.64"),
        conditions=(ConditionResult("RSI(14)", ">", "40", 48.5, 40.0, None, True),),
        values={"RSI(14)": 48.5},
        gate=gate,
    )


async def test_decisions_are_written_with_the_intents_they_caused_for_many_executions(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    first, second = new_execution(), new_execution()
    records = [await create(store, e) for e in (first, second)]
    eid = first.execution_id

    outcome = await store.commit(
        [
            step(
                records[0],
                intents=[intent(eid, 1)],
                decisions=[decision(), decision("MSFT", gate=Gate.CASH)],
                events=[outbox_event(first, 1)],
            ),
            step(records[1], decisions=[decision()]),
        ]
    )
    rows = await MarketDataStore(store.pool).load_decisions(eid)

    assert outcome.lost == frozenset()
    assert [(r.symbol, r.outcome, r.gate) for r in rows] == [
        ("AAPL", "fired", None),
        ("MSFT", "fired", "cash"),
    ]
    assert Decimal(rows[0].details["close"]) == Decimal("185.64")  # exact, as text
    assert rows[0].details["conditions"][0]["left"] == "RSI(14)"
    # Same transaction: the decision and the order it caused share one xmin.
    same = await raw_conn.fetchval(
        "SELECT count(DISTINCT d.xmin::text) FROM signal_decisions d, execution_orders o "
        "WHERE d.execution_id = $1 AND o.execution_id = $1 AND d.xmin = o.xmin",
        eid,
    )
    assert same == 1
    assert len(await MarketDataStore(store.pool).load_decisions(second.execution_id)) == 1


async def test_a_fenced_out_write_records_none_of_its_decisions_and_a_replay_none_twice(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    execution = new_execution()
    record = await create(store, execution)
    eid = execution.execution_id

    stale = await store.commit(
        [step(record, fence=Fence(owner_id="w9", epoch=7), decisions=[decision()])]
    )
    assert stale.lost == {eid}
    assert (
        await raw_conn.fetchval(
            "SELECT count(*) FROM signal_decisions WHERE execution_id = $1", eid
        )
        == 0
    )

    await store.commit([step(record, decisions=[decision(gate=None)])])
    again = await store.get_execution(eid)
    assert again is not None
    await store.commit([step(again, decisions=[decision(gate=Gate.RATE), decision(day=1)])])

    rows = await MarketDataStore(store.pool).load_decisions(eid)
    assert [(r.bar_start, r.gate) for r in rows] == [(BAR, None), (BAR + timedelta(days=1), None)]
