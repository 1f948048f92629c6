"""SQL for protective orders (migration 005): statements, parameter builders, row mappers.

Made to run inside the runtime's own commit transaction, beside its other writes, so the
intents a `ProtectionBook.decide` returned and the book's new state are durable together,
before anything is sent:

    await conn.fetch(INSERT_PROTECTIVE_INTENTS, *protective_intent_params(step.intents))
    row = await conn.fetchrow(UPSERT_PROTECTION_STATE,
                              *protection_state_params(execution_id, book, fence=fence))
    if row is None: -> the lease is lost (LeaseLostError), as for every fenced write

and on a restart or a takeover:

    rows = await conn.fetch(GET_PROTECTION_STATES, [execution ids])
    record = protection_state_from_row(row)
    book = ProtectionBook.from_json(record.state, execution_id=..., spec=..., capabilities=...)

Nothing is formatted into the statements; values travel as parameters. JSONB goes in as
text cast in SQL (`$n::text::jsonb`), so the statements work whether or not the connection
has a JSON codec, and comes back as either (the mapper accepts both).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres.rows import num, opt_num
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side, Trail
from strategy_worker.domain.protection import ProtectionBook
from strategy_worker.domain.protection.state import STATE_VERSION
from strategy_worker.errors import StoreError
from strategy_worker.store import Fence, order_id_for

Row = Mapping[str, Any]

#: Every column of an order intent, protective fields included (001 + 005).
INTENT_COLUMNS = (
    "order_id",
    "execution_id",
    "client_order_id",
    "intent_seq",
    "symbol",
    "side",
    "order_type",
    "purpose",
    "quantity",
    "price",
    "limit_price",
    "stop_price",
    "trail_pct",
    "trail_amount",
    "trail_limit_offset",
    "trail_reference",
    "parent_client_order_id",
    "oco_group_id",
    "reduce_only",
)

# Parameters: protective_intent_params() (one array per column, in INTENT_COLUMNS order).
# A parent is recorded before its children: in one statement that is the row order, and the
# self-reference is checked at the end of the statement.
INSERT_PROTECTIVE_INTENTS = """
INSERT INTO execution_orders (
    order_id, execution_id, client_order_id, intent_seq, symbol, side, order_type, purpose,
    quantity, price, limit_price, stop_price, trail_pct, trail_amount, trail_limit_offset,
    trail_reference, parent_client_order_id, oco_group_id, reduce_only)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[],
                     $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[],
                     $16::numeric[], $17::text[], $18::text[], $19::boolean[])
ON CONFLICT DO NOTHING
RETURNING client_order_id
"""

# $1: client order ids. For comparing an intent already recorded (ON CONFLICT found it).
GET_INTENTS_BY_CLIENT_ID = """
SELECT * FROM execution_orders WHERE client_order_id = ANY($1::text[]) ORDER BY intent_seq
"""

# $1 execution, $2 state (text of JSON), $3 state version, $4 unprotected count, $5/$6 the
# fence (owner id, lease epoch; NULL owner = unfenced). No row back = the fence failed.
UPSERT_PROTECTION_STATE = """
INSERT INTO execution_protection AS p (execution_id, state, state_version, unprotected)
SELECT e.execution_id, $2::text::jsonb, $3::integer, $4::integer
FROM strategy_executions AS e
WHERE e.execution_id = $1::uuid
  AND ($5::text IS NULL OR (e.owner_id = $5::text AND e.lease_epoch = $6::bigint))
ON CONFLICT (execution_id) DO UPDATE SET
    state = EXCLUDED.state, state_version = EXCLUDED.state_version,
    unprotected = EXCLUDED.unprotected, revision = p.revision + 1, updated_at = now()
RETURNING execution_id, revision
"""

# The same for many executions at once (the monitor's per-cycle writes): arrays of
# execution ids, states (text), versions, unprotected counts, owners, epochs. Returns the
# executions written; one missing from the answer failed its fence.
UPSERT_PROTECTION_STATES = """
INSERT INTO execution_protection AS p (execution_id, state, state_version, unprotected)
SELECT e.execution_id, u.state::jsonb, u.state_version, u.unprotected
FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::integer[], $5::text[], $6::bigint[])
    AS u(execution_id, state, state_version, unprotected, owner_id, lease_epoch)
JOIN strategy_executions AS e ON e.execution_id = u.execution_id
WHERE u.owner_id IS NULL OR (e.owner_id = u.owner_id AND e.lease_epoch = u.lease_epoch)
ORDER BY e.execution_id
ON CONFLICT (execution_id) DO UPDATE SET
    state = EXCLUDED.state, state_version = EXCLUDED.state_version,
    unprotected = EXCLUDED.unprotected, revision = p.revision + 1, updated_at = now()
RETURNING execution_id, revision
"""

# $1: execution ids.
GET_PROTECTION_STATES = """
SELECT execution_id, state, state_version, revision, unprotected, updated_at
FROM execution_protection WHERE execution_id = ANY($1::uuid[])
"""

# Operators and the readiness of a fleet: executions whose last write left positions open
# without live protection.
LIST_UNPROTECTED = """
SELECT execution_id, unprotected, updated_at FROM execution_protection
WHERE unprotected > 0 ORDER BY updated_at
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionStateRecord:
    """One `execution_protection` row."""

    execution_id: uuid.UUID
    state: dict[str, Any]
    state_version: int
    revision: int
    unprotected: int
    updated_at: datetime


# ---------------------------------------------------------------------- parameter builders


def protective_intent_params(intents: Sequence[OrderIntent]) -> tuple[list[Any], ...]:
    """The 19 arrays of INSERT_PROTECTIVE_INTENTS (works for any intent, protective or not)."""
    trails = [i.trail for i in intents]
    return (
        [order_id_for(i.client_order_id) for i in intents],
        [i.execution_id for i in intents],
        [i.client_order_id for i in intents],
        [i.intent_seq for i in intents],
        [i.symbol for i in intents],
        [i.side.value for i in intents],
        [i.order_type.value for i in intents],
        [i.purpose.value for i in intents],
        [num(i.quantity) for i in intents],
        [num(i.price) for i in intents],
        [opt_num(i.limit_price) for i in intents],
        [opt_num(i.stop_price) for i in intents],
        [None if t is None else opt_num(t.pct) for t in trails],
        [None if t is None else opt_num(t.amount) for t in trails],
        [None if t is None else opt_num(t.limit_offset) for t in trails],
        [None if t is None else opt_num(t.reference_price) for t in trails],
        [i.parent_client_order_id or None for i in intents],
        [i.oco_group_id or None for i in intents],
        [i.reduce_only for i in intents],
    )


def _fence_params(fence: Fence | None) -> tuple[str | None, int | None]:
    return (None, None) if fence is None else (fence.owner_id, fence.epoch)


def protection_state_params(
    execution_id: uuid.UUID, book: ProtectionBook, *, fence: Fence | None, unprotected: int = 0
) -> tuple[Any, ...]:
    """The 6 parameters of UPSERT_PROTECTION_STATE; serializes the book (`to_json`)."""
    owner, epoch = _fence_params(fence)
    return (
        execution_id,
        jsoncodec.dumps(book.to_json()),
        STATE_VERSION,
        unprotected,
        owner,
        epoch,
    )


def protection_states_params(
    items: Sequence[tuple[uuid.UUID, ProtectionBook, Fence | None, int]],
) -> tuple[list[Any], ...]:
    """The 6 arrays of UPSERT_PROTECTION_STATES from (execution, book, fence, unprotected)."""
    fences = [_fence_params(fence) for _, _, fence, _ in items]
    return (
        [execution_id for execution_id, _, _, _ in items],
        [jsoncodec.dumps(book.to_json()) for _, book, _, _ in items],
        [STATE_VERSION for _ in items],
        [unprotected for _, _, _, unprotected in items],
        [owner for owner, _ in fences],
        [epoch for _, epoch in fences],
    )


# ---------------------------------------------------------------------- row mappers


def intent_from_row(row: Row) -> OrderIntent:
    """The intent an `execution_orders` row records, protective fields included: what to
    resubmit after a restart, and what a re-recorded intent must equal."""
    trail: Trail | None = None
    if row["order_type"] == OrderType.TRAILING_STOP.value:
        trail = Trail(
            pct=row["trail_pct"],
            amount=row["trail_amount"],
            limit_offset=row["trail_limit_offset"],
            reference_price=row["trail_reference"],
        )
    return OrderIntent(
        client_order_id=row["client_order_id"],
        execution_id=row["execution_id"],
        intent_seq=row["intent_seq"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        quantity=row["quantity"],
        price=row["price"],
        purpose=OrderPurpose(row["purpose"]),
        limit_price=row["limit_price"],
        stop_price=row["stop_price"],
        trail=trail,
        parent_client_order_id=row["parent_client_order_id"] or "",
        oco_group_id=row["oco_group_id"] or "",
        reduce_only=row["reduce_only"],
    )


def protection_state_from_row(row: Row) -> ProtectionStateRecord:
    """A row of GET_PROTECTION_STATES; the state is a dict whatever the JSON codec."""
    state = row["state"]
    if isinstance(state, str | bytes):
        state = json.loads(state, parse_float=Decimal)
    if not isinstance(state, dict):
        raise StoreError(f"execution_protection.state of {row['execution_id']} is not an object")
    return ProtectionStateRecord(
        execution_id=row["execution_id"],
        state=state,
        state_version=row["state_version"],
        revision=row["revision"],
        unprotected=row["unprotected"],
        updated_at=row["updated_at"],
    )
