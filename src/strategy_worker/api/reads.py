"""The API's read model: its own queries on the worker's tables (asyncpg), never a write.

Every query is scoped by the caller: `owner` is the user id whose rows may be read, or None
for an operator. A row of another user is simply not found, so the API answers 404 and never
reveals that it exists. Rows come back as plain dicts of JSON-ready values (Decimal stays
Decimal, encoded later as an exact JSON number; UUIDs and instants as strings).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.messages.jsonwire import isoformat_z

EXECUTION_COLUMNS = """
    e.execution_id, e.strategy_id, e.user_id, e.status, e.trading_state,
    e.config->>'name' AS name, e.config->>'type' AS strategy_type, e.initial_capital, e.cash,
    e.fees, e.realized_pnl, e.unrealized_pnl, e.total_pnl, e.total_trades, e.winning_trades,
    e.losing_trades, e.started_at, e.stopped_at, e.stop_reason, e.updated_at
"""

_LIST_EXECUTIONS = f"""
SELECT {EXECUTION_COLUMNS}
FROM strategy_executions e
WHERE ($1::uuid IS NULL OR e.user_id = $1)
  AND ($2::text IS NULL OR e.status = $2)
  AND ($3::uuid IS NULL OR e.strategy_id = $3)
  AND ($4::timestamptz IS NULL OR (e.started_at, e.execution_id) < ($4, $5::uuid))
ORDER BY e.started_at DESC, e.execution_id DESC
LIMIT $6
"""  # noqa: S608 - the only interpolation is the constant column list

_GET_EXECUTION = f"""
SELECT {EXECUTION_COLUMNS}, e.config, e.positions, e.trading_day, e.day_start_equity
FROM strategy_executions e
WHERE e.execution_id = $1 AND ($2::uuid IS NULL OR e.user_id = $2)
"""  # noqa: S608 - the only interpolation is the constant column list

_OWNER_OF = "SELECT user_id FROM strategy_executions WHERE execution_id = $1"

_ORDERS = """
SELECT order_id, client_order_id, intent_seq, oms_order_id, symbol, side, order_type, purpose,
       quantity, price, limit_price, status, filled_quantity, filled_price, fees, reason,
       created_at, updated_at
FROM execution_orders WHERE execution_id = $1 ORDER BY intent_seq
"""

_FILLS = """
SELECT f.fill_id, f.client_order_id, o.purpose, f.symbol, f.side, f.quantity, f.price, f.fee,
       f.filled_at, f.recorded_at
FROM execution_fills f JOIN execution_orders o USING (client_order_id)
WHERE o.execution_id = $1
ORDER BY f.filled_at, f.recorded_at, f.fill_id
"""

_RISK_EVENTS = """
SELECT event_id, event_type, severity, description, action_taken, details, occurred_at
FROM risk_events
WHERE execution_id = $1 AND ($2::text IS NULL OR severity = $2)
ORDER BY occurred_at DESC, event_id
LIMIT $3
"""

_SNAPSHOTS = """
SELECT taken_at, total_value, total_pnl, unrealized_pnl, realized_pnl, cash, positions
FROM position_snapshots WHERE execution_id = $1 ORDER BY taken_at
"""

_DECISIONS = """
SELECT symbol, timeframe, bar_start, rule, outcome, "values", gate, decided_at
FROM signal_decisions
WHERE execution_id = $1
ORDER BY decided_at DESC
LIMIT $2
"""

_RUNNING_EXECUTIONS = """
SELECT execution_id, user_id FROM strategy_executions
WHERE status IN ('active', 'paused') AND ($1::uuid IS NULL OR user_id = $1)
ORDER BY execution_id
"""


def plain(value: object) -> object:
    """A database value in its JSON-ready form (exact Decimals kept)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return isoformat_z(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float):  # indicator values in decision rows: not money
        return Decimal(repr(value))
    if hasattr(value, "isoformat"):  # date
        return value.isoformat()
    return value


def row_dict(row: asyncpg.Record, skip: Sequence[str] = ()) -> dict[str, Any]:
    return {key: plain(row[key]) for key in row.keys() if key not in skip}  # noqa: SIM118


def encode_page_token(started_at: datetime, execution_id: uuid.UUID) -> str:
    raw = json.dumps([started_at.isoformat(), str(execution_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    try:
        padded = token + "=" * (-len(token) % 4)
        started, execution = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(started), uuid.UUID(execution)
    except (ValueError, TypeError, json.JSONDecodeError):
        return None


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSONB in and out through the project's codec (numbers back as Decimal)."""
    await conn.set_type_codec(
        "jsonb", encoder=jsoncodec.dumps, decoder=jsoncodec.loads, schema="pg_catalog"
    )


class ReadModel:
    """The queries behind the API's GET endpoints."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def list_executions(
        self,
        *,
        owner: uuid.UUID | None,
        status: str | None,
        strategy_id: uuid.UUID | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, and the token of the next page (None at the end)."""
        rows = await self._pool.fetch(
            _LIST_EXECUTIONS,
            owner,
            status,
            strategy_id,
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        token = (
            encode_page_token(rows[-1]["started_at"], rows[-1]["execution_id"])
            if more and rows
            else None
        )
        return [row_dict(r) for r in rows], token

    async def execution(
        self, execution_id: uuid.UUID, owner: uuid.UUID | None
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._pool.fetchrow(_GET_EXECUTION, execution_id, owner)
        return row

    async def visible(self, execution_id: uuid.UUID, owner: uuid.UUID | None) -> bool:
        """Whether the caller may see this execution (False also when it does not exist)."""
        found = await self._pool.fetchval(_OWNER_OF, execution_id)
        return found is not None and (owner is None or found == owner)

    async def orders(self, execution_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(_ORDERS, execution_id))

    async def fills(self, execution_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(_FILLS, execution_id))

    async def risk_events(
        self, execution_id: uuid.UUID, *, severity: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_RISK_EVENTS, execution_id, severity, limit)
        return [row_dict(r) for r in rows]

    async def snapshots(self, execution_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(_SNAPSHOTS, execution_id))

    async def decisions(
        self, execution_id: uuid.UUID, *, limit: int
    ) -> list[dict[str, Any]] | None:
        """The execution's signal decisions, newest first; None while the table does not
        exist yet (migration 004 adds it)."""
        try:
            rows = await self._pool.fetch(_DECISIONS, execution_id, limit)
        except asyncpg.UndefinedTableError:
            return None
        return [row_dict(r) for r in rows]

    async def running_executions(self, user_id: uuid.UUID | None) -> list[asyncpg.Record]:
        """Active or paused executions (of one user, or all): the kill switch's targets."""
        return list(await self._pool.fetch(_RUNNING_EXECUTIONS, user_id))
