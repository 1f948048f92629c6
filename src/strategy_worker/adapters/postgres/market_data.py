"""Bars and signal decisions in PostgreSQL (`004_market_data.sql`), on an asyncpg pool.

`MarketDataStore` is small on purpose: a batch upsert of bars (one statement), the last N
closed bars per stream for warm-up, a time range of bars for a rebuild, a batch insert of
decisions and pruning by retention. The decision insert also exists as plain SQL text and a
parameter builder (`DECISIONS_INSERT_SQL`, `decision_params`) so the runtime can run it on
its own connection inside its commit transaction.

Nothing here depends on the pool's JSON codecs: JSONB goes in as text cast in SQL and comes
out as text decoded with `jsoncodec` (numbers with a fraction become Decimal there).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres.connect import to_store_error
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.domain.signals.timeframes import Timeframe, timeframe
from strategy_worker.errors import StoreError

_UPSERT_BARS = """
INSERT INTO market_bars
    (symbol, timeframe, bar_start, open, high, low, close, volume, source, received_at)
SELECT s, t, b, o, h, l, c, v, $9, $10
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::numeric[], $5::numeric[],
            $6::numeric[], $7::numeric[], $8::numeric[]) AS x(s, t, b, o, h, l, c, v)
ON CONFLICT (symbol, timeframe, bar_start) DO {action}
"""
_KEEP = "NOTHING"
_REPLACE = """UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
    close = EXCLUDED.close, volume = EXCLUDED.volume, source = EXCLUDED.source,
    received_at = EXCLUDED.received_at
    WHERE (market_bars.open, market_bars.high, market_bars.low, market_bars.close,
           market_bars.volume)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                        EXCLUDED.volume)"""

_WARMUP = """
SELECT w.*
FROM unnest($1::text[], $2::text[]) AS k(symbol, timeframe)
CROSS JOIN LATERAL (
    SELECT symbol, timeframe, bar_start, open, high, low, close, volume FROM market_bars m
    WHERE m.symbol = k.symbol AND m.timeframe = k.timeframe AND m.bar_start < $3
    ORDER BY m.bar_start DESC LIMIT $4
) AS w
"""

_RANGE = """
SELECT symbol, timeframe, bar_start, open, high, low, close, volume FROM market_bars
WHERE symbol = ANY($1::text[]) AND timeframe = $2 AND bar_start >= $3 AND bar_start < $4
ORDER BY bar_start, symbol
"""

#: Insert decisions; parameters from `decision_params`. Idempotent (a replayed bar's
#: decision is already there); run it on any connection, e.g. inside the commit transaction.
DECISIONS_INSERT_SQL: Final = """
INSERT INTO signal_decisions
    (execution_id, symbol, timeframe, bar_start, rule, outcome, gate, "values", decided_at)
SELECT $1, s, t, b, r, o, g, v::jsonb, d
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::timestamptz[]) AS x(s, t, b, r, o, g, v, d)
ON CONFLICT DO NOTHING
"""

#: The same for the decisions of many executions at once (one statement per commit batch);
#: parameters from `batch_decision_params`.
DECISIONS_BATCH_INSERT_SQL: Final = """
INSERT INTO signal_decisions
    (execution_id, symbol, timeframe, bar_start, rule, outcome, gate, "values", decided_at)
SELECT e, s, t, b, r, o, g, v::jsonb, d
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::timestamptz[]) AS x(e, s, t, b, r, o, g, v, d)
ON CONFLICT DO NOTHING
"""

_DECISIONS = """
SELECT symbol, timeframe, bar_start, rule, outcome, gate, "values"::text AS details, decided_at
FROM signal_decisions WHERE execution_id = $1
ORDER BY decided_at, bar_start, symbol, rule LIMIT $2
"""

_LAST_RECEIVED = """
SELECT max(received_at) FROM market_bars WHERE source = $1 AND received_at >= $2
"""

_PRUNE = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))
"""


def decision_params(
    execution_id: uuid.UUID, decisions: Sequence[SignalDecision]
) -> tuple[Any, ...]:
    """The parameters of `DECISIONS_INSERT_SQL` for one execution's decisions."""
    return (
        execution_id,
        [d.symbol for d in decisions],
        [str(d.timeframe) for d in decisions],
        [d.bar_start for d in decisions],
        [str(d.rule) for d in decisions],
        [str(d.outcome) for d in decisions],
        [None if d.gate is None else str(d.gate) for d in decisions],
        [jsoncodec.dumps(d.details()) for d in decisions],
        [d.decided_at for d in decisions],
    )


def batch_decision_params(
    rows: Sequence[tuple[uuid.UUID, SignalDecision]],
) -> tuple[Any, ...]:
    """The parameters of `DECISIONS_BATCH_INSERT_SQL` for (execution id, decision) pairs."""
    return (
        [e for e, _ in rows],
        *decision_params(uuid.UUID(int=0), [d for _, d in rows])[1:],
    )


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """A `signal_decisions` row as read back."""

    symbol: str
    timeframe: Timeframe
    bar_start: datetime
    rule: str
    outcome: str
    gate: str | None
    details: Mapping[str, Any]
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class Pruned:
    decisions: int
    bars: int


class MarketDataStore:
    """Bars and decisions on a pool the caller owns (it is never closed here)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def _conn(self, operation: str) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            raise to_store_error(exc, operation) from exc

    # ------------------------------------------------------------------ bars

    async def upsert_bars(
        self,
        bars: Sequence[Bar],
        *,
        source: str,
        received_at: datetime,
        replace: bool = False,
    ) -> int:
        """Write bars in one statement; returns how many rows were written.

        By default an existing (symbol, timeframe, bar_start) is kept (the bar already
        used stays the one a rebuild replays); `replace=True` overwrites differing rows
        (a deliberate re-import of corrected history).
        """
        if not bars:
            return 0
        sql = _UPSERT_BARS.format(action=_REPLACE if replace else _KEEP)
        async with self._conn("upsert bars") as conn:
            status = await conn.execute(
                sql,
                [b.symbol for b in bars],
                [str(b.timeframe) for b in bars],
                [b.start for b in bars],
                [b.open for b in bars],
                [b.high for b in bars],
                [b.low for b in bars],
                [b.close for b in bars],
                [b.volume for b in bars],
                source,
                received_at,
            )
        return int(status.rsplit(" ", 1)[-1])

    async def load_warmup(
        self,
        streams: Iterable[tuple[str, Timeframe]],
        *,
        bars: int,
        before: datetime,
    ) -> dict[tuple[str, Timeframe], list[Bar]]:
        """The last `bars` bars of each stream that started before `before`, oldest first
        (one query for every stream). A stream without history maps to []."""
        keys = sorted(set(streams), key=lambda k: (k[0], k[1].seconds))
        found: dict[tuple[str, Timeframe], list[Bar]] = {key: [] for key in keys}
        if not keys or bars <= 0:
            return found
        async with self._conn("load warm-up bars") as conn:
            rows = await conn.fetch(
                _WARMUP,
                [k[0] for k in keys],
                [str(k[1]) for k in keys],
                before,
                bars,
            )
        for row in rows:
            bar = _bar(row)
            found[bar.key].append(bar)
        for series in found.values():
            series.sort(key=lambda b: b.start)
        return found

    async def load_range(
        self, symbols: Sequence[str], tf: Timeframe, *, since: datetime, until: datetime
    ) -> list[Bar]:
        """Every stored bar of `symbols` on `tf` with since <= start < until, oldest first."""
        async with self._conn("load bars") as conn:
            rows = await conn.fetch(_RANGE, list(symbols), str(tf), since, until)
        return [_bar(row) for row in rows]

    async def last_received(self, source: str, *, since: datetime) -> datetime | None:
        """When the newest bar from `source` was written, if at or after `since` (a bar
        feed resumes from there; a BRIN index on received_at, migration 008, keeps the scan
        to recent rows)."""
        async with self._conn("last bar received") as conn:
            value = await conn.fetchval(_LAST_RECEIVED, source, since)
        return value if isinstance(value, datetime) else None

    # ------------------------------------------------------------------ decisions

    async def insert_decisions(
        self, execution_id: uuid.UUID, decisions: Sequence[SignalDecision]
    ) -> int:
        """Record decisions in one statement (outside a runtime transaction); returns how
        many were new."""
        if not decisions:
            return 0
        async with self._conn("insert decisions") as conn:
            status = await conn.execute(
                DECISIONS_INSERT_SQL, *decision_params(execution_id, decisions)
            )
        return int(status.rsplit(" ", 1)[-1])

    async def load_decisions(
        self, execution_id: uuid.UUID, *, limit: int = 1000
    ) -> list[StoredDecision]:
        """An execution's decisions, oldest first (queries, tests, the paper summary)."""
        async with self._conn("load decisions") as conn:
            rows = await conn.fetch(_DECISIONS, execution_id, limit)
        return [
            StoredDecision(
                symbol=row["symbol"],
                timeframe=timeframe(row["timeframe"]),
                bar_start=row["bar_start"],
                rule=row["rule"],
                outcome=row["outcome"],
                gate=row["gate"],
                details=jsoncodec.loads(row["details"]),
                decided_at=row["decided_at"],
            )
            for row in rows
        ]

    # ------------------------------------------------------------------ retention

    async def prune(
        self,
        *,
        decisions_before: datetime,
        bars_before: datetime | None = None,
        batch: int = 10_000,
    ) -> Pruned:
        """Delete decisions decided before `decisions_before` and, when given, bars that
        started before `bars_before`, in batches of `batch` rows (short transactions)."""
        decisions = await self._prune("signal_decisions", "decided_at", decisions_before, batch)
        bars = 0
        if bars_before is not None:
            bars = await self._prune("market_bars", "bar_start", bars_before, batch)
        return Pruned(decisions, bars)

    async def _prune(self, table: str, column: str, before: datetime, batch: int) -> int:
        sql = _PRUNE.format(table=table, column=column)
        total = 0
        async with self._conn(f"prune {table}") as conn:
            while True:
                status = await conn.execute(sql, before, batch)
                deleted = int(status.rsplit(" ", 1)[-1])
                total += deleted
                if deleted < batch:
                    return total


def _bar(row: Mapping[str, Any]) -> Bar:
    return Bar(
        symbol=row["symbol"],
        timeframe=timeframe(row["timeframe"]),
        start=row["bar_start"],
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        volume=row["volume"],
    )
