"""The signal pieces together on the real Kafka and PostgreSQL, as the runtime will chain
them: bar topic -> feed -> gate -> market_bars -> engine -> decisions in one transaction.

The spec's MOMENTUM shorthand (RSI(14) > 40 and MACD above its signal) on real MSFT days:
the first `open` decision is on the bar TA-Lib says, and a rebuilt engine agrees."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import talib
from aiokafka import AIOKafkaProducer

from strategy_worker.adapters.bar_files import BarFile
from strategy_worker.adapters.kafka.bars import KafkaBarFeed
from strategy_worker.adapters.postgres.market_data import (
    DECISIONS_INSERT_SQL,
    MarketDataStore,
    decision_params,
)
from strategy_worker.config import KafkaConfig
from strategy_worker.domain.signals.acceptance import BarGate
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.decisions import Outcome, SignalDecision
from strategy_worker.domain.signals.engine import SignalEngine
from strategy_worker.domain.strategy import ApprovedStrategy, parse_strategy_message
from strategy_worker.messages.bars import encode_bar_message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MSFT = Path(__file__).resolve().parents[2] / "data" / "msft_daily.csv"
SAMPLE = json.loads(
    (Path(__file__).resolve().parents[3] / "examples" / "tech-growth.json").read_text()
)


async def test_published_bars_drive_the_spec_sample_to_the_bar_talib_computes(
    kafka_bootstrap: str, make_topic: Callable[..., Awaitable[str]], migrated_dsn: str
) -> None:
    # Arrange: the spec sample (shorthand rules) on MSFT only; 400 real days on the topic.
    message = {**SAMPLE, "strategy_id": str(uuid.uuid4())}
    message["config"] = {**SAMPLE["config"], "symbols": ["MSFT"], "allocation": {"MSFT": 0.3}}
    strategy = parse_strategy_message(json.dumps(message))
    assert isinstance(strategy, ApprovedStrategy)
    bars = list(BarFile(MSFT))[:400]
    close = np.array([float(b.close) for b in bars])
    rsi = talib.RSI(close, 14)
    macd, signal, _ = talib.MACD(close, 12, 26, 9)
    engine = SignalEngine.for_config(strategy.config)
    assert engine is not None
    warm = engine.warmup_bars(bars[0].timeframe)
    expected = next(i for i in range(warm - 1, len(bars)) if rsi[i] > 40 and macd[i] > signal[i])
    topic = await make_topic("bars", partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for bar in bars:
            await producer.send(topic, encode_bar_message(bar), key=b"MSFT")
        await producer.flush()
    finally:
        await producer.stop()
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=2)
    store = MarketDataStore(pool)
    feed = KafkaBarFeed(
        KafkaConfig(bootstrap_servers=kafka_bootstrap),
        topic=topic,
        start_from=datetime(2000, 1, 1, tzinfo=UTC),
    )
    gate = BarGate()
    decisions: list[SignalDecision] = []
    used: list[Bar] = []
    # Act: what the runtime's bar loop does, one batch at a time.
    try:
        await feed.start()

        async def consume() -> None:
            async for batch in feed:
                now = datetime.now(UTC)
                accepted = gate.accept(batch.bars, now=now).accepted
                await store.upsert_bars(accepted, source="kafka", received_at=now)
                step = [d for bar in accepted for d in engine.on_bar(bar, now=bar.end)]
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        DECISIONS_INSERT_SQL, *decision_params(strategy.execution_id, step)
                    )
                used.extend(accepted)
                decisions.extend(step)
                if len(used) >= len(bars):
                    return

        await asyncio.wait_for(consume(), 60)
        stored = await store.load_decisions(strategy.execution_id)
        history = await store.load_range(
            ["MSFT"], bars[0].timeframe, since=bars[0].start, until=bars[-1].end
        )
    finally:
        await feed.stop()
        await pool.close()
    # Assert: first open on the bar TA-Lib names, nothing fired before it, all stored.
    fired = [d for d in decisions if d.outcome is Outcome.FIRED]
    assert fired[0].bar_start == bars[expected].start
    assert decisions[0].outcome is Outcome.WARMUP
    assert [(s.bar_start, s.outcome) for s in stored] == [
        (d.bar_start, str(d.outcome)) for d in decisions
    ]
    assert history == bars
    # A rebuild from the stored bars (the first `expected` of them) fires on the same bar.
    rebuilt = SignalEngine.for_config(strategy.config)
    assert rebuilt is not None
    rebuilt.warm(history[:expected])
    again = rebuilt.on_bar(history[expected], now=history[expected].end)
    assert [d.outcome for d in again] == [Outcome.FIRED]
