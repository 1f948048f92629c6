"""MarketDataStore on the real PostgreSQL: bars in one statement, warm-up per stream, range
for rebuilds, decisions (also inside a caller's transaction), retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.market_data import (
    DECISIONS_INSERT_SQL,
    MarketDataStore,
    decision_params,
)
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.decisions import Gate, Outcome
from strategy_worker.domain.signals.engine import SignalEngine
from strategy_worker.domain.signals.parsing import parse_rule_set
from strategy_worker.domain.signals.rules import RuleKind, RuleSet, StrategyRules
from strategy_worker.domain.signals.synthetic import random_bars
from strategy_worker.domain.signals.timeframes import timeframe

D1, H1 = timeframe("1d"), timeframe("1h")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def market(migrated_dsn: str) -> AsyncIterator[MarketDataStore]:
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE market_bars, signal_decisions")
        yield MarketDataStore(pool)
    finally:
        await pool.close()


async def test_bars_round_trip_exactly_and_an_existing_bar_is_kept(market: MarketDataStore) -> None:
    bars = random_bars(30, seed=1) + random_bars(30, seed=2, symbol="MSFT")
    assert await market.upsert_bars(bars, source="test", received_at=NOW) == 60
    changed = Bar(**{**_fields(bars[5]), "close": bars[5].close + Decimal("0.0001")})
    # The bar that was used stays, unless an import replaces it on purpose.
    assert await market.upsert_bars([changed, bars[6]], source="kafka", received_at=NOW) == 0
    loaded = await market.load_range(["AAPL"], D1, since=bars[0].start, until=NOW)
    assert loaded == bars[:30]
    assert (
        await market.upsert_bars([changed, bars[6]], source="import", received_at=NOW, replace=True)
        == 1
    )
    loaded = await market.load_range(["AAPL", "MSFT"], D1, since=bars[5].start, until=bars[6].start)
    assert [b.close for b in loaded] == [changed.close, bars[35].close]


async def test_warmup_loads_the_last_n_bars_before_a_time_for_every_stream(
    market: MarketDataStore,
) -> None:
    daily = random_bars(50, seed=3)
    hourly = random_bars(50, seed=4, tf=H1, start=datetime(2020, 1, 1, tzinfo=UTC))
    await market.upsert_bars(daily + hourly, source="test", received_at=NOW)
    cutoff = daily[40].start
    found = await market.load_warmup(
        [("AAPL", D1), ("AAPL", H1), ("NOPE", D1)], bars=10, before=cutoff
    )
    assert found[("AAPL", D1)] == daily[30:40]
    assert found[("AAPL", H1)] == hourly[40:50]  # all before the daily cutoff
    assert found[("NOPE", D1)] == []


async def test_an_engine_warmed_from_stored_bars_decides_like_the_live_one(
    market: MarketDataStore,
) -> None:
    rules = StrategyRules(
        entry=_rules({"all": [{"indicator": "RSI", "period": 5, "op": "<", "value": 45}]})
    )
    bars = random_bars(120, seed=8)
    await market.upsert_bars(bars[:80], source="test", received_at=NOW)
    live = SignalEngine(rules, ["AAPL"])
    for bar in bars[:80]:
        live.on_bar(bar, now=bar.end)
    rebuilt = SignalEngine(rules, ["AAPL"])
    history = await market.load_warmup([("AAPL", D1)], bars=1000, before=bars[80].start)
    rebuilt.warm(history[("AAPL", D1)])
    for bar in bars[80:]:
        assert rebuilt.on_bar(bar, now=bar.end) == live.on_bar(bar, now=bar.end)


async def test_decisions_insert_in_a_callers_transaction_idempotently(
    market: MarketDataStore, migrated_dsn: str
) -> None:
    engine = SignalEngine(
        StrategyRules(
            entry=_rules({"all": [{"indicator": "RSI", "period": 3, "op": "<", "value": 60}]})
        ),
        ["AAPL"],
    )
    decisions = []
    for bar in random_bars(40, seed=6):
        decisions += engine.on_bar(bar, now=bar.end)
    decisions = [d.with_gate(Gate.CASH) if d.outcome is Outcome.FIRED else d for d in decisions]
    execution_id = uuid.uuid4()
    conn = await asyncpg.connect(migrated_dsn)
    try:
        async with conn.transaction():
            await conn.execute(DECISIONS_INSERT_SQL, *decision_params(execution_id, decisions))
    finally:
        await conn.close()
    assert await market.insert_decisions(execution_id, decisions) == 0  # already there
    stored = await market.load_decisions(execution_id)
    assert [(s.bar_start, s.outcome, s.gate) for s in stored] == [
        (d.bar_start, str(d.outcome), None if d.gate is None else str(d.gate)) for d in decisions
    ]
    first = stored[0].details
    assert first["close"] == str(decisions[0].close)
    assert first["conditions"][0]["left"] == "RSI(3)"


async def test_prune_deletes_by_age_in_batches(market: MarketDataStore) -> None:
    bars = random_bars(30, seed=9)
    await market.upsert_bars(bars, source="test", received_at=NOW)
    engine = SignalEngine(
        StrategyRules(entry=_rules({"all": [{"indicator": "PRICE", "op": ">", "value": 0}]})),
        ["AAPL"],
    )
    decisions = [d for bar in bars for d in engine.on_bar(bar, now=bar.end)]
    await market.insert_decisions(uuid.uuid4(), decisions)
    result = await market.prune(decisions_before=bars[10].end, bars_before=bars[20].start, batch=3)
    assert result.bars == 20
    assert result.decisions == sum(1 for d in decisions if d.decided_at < bars[10].end)
    left = await market.load_range(["AAPL"], D1, since=bars[0].start, until=NOW)
    assert left == bars[20:]


def _rules(obj: dict[str, object]) -> RuleSet:
    parsed = parse_rule_set(obj, kind=RuleKind.ENTRY, strategy_type="MOMENTUM", path="r")
    assert isinstance(parsed, RuleSet)
    return parsed


def _fields(bar: Bar) -> dict[str, object]:
    return {
        k: getattr(bar, k)
        for k in ("symbol", "timeframe", "start", "open", "high", "low", "close", "volume")
    }


_ = timedelta
