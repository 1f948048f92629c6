"""What the PostgreSQL twin holds, compared with the in-memory store (the simulation's
source of truth): every execution's row (status, version, owner and epoch, lease expiry,
state, ledger exposure), its orders and its fills in the order the store returns them, its
protection state (`execution_protection`), the risk ledger's totals, the control requests,
the report cursors, and the outbox (the same
event ids, in the same commit order, with the same content). Risk events and snapshots are
counted every time and compared row by row at the end.

Values are compared as plain data (`plain`): records as dicts of their fields, JSON
columns through the store's own JSON codec, enums by value. `created_at` and `updated_at`
are left out: PostgreSQL fills some of them from column defaults on the server's own clock,
which the simulation does not control (nothing in the runtime reads them).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Mapping, Sequence
from enum import Enum
from typing import Any

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.messages import encode_json
from strategy_worker.store import OutboxEvent
from strategy_worker.testing.memory_rows import happened
from strategy_worker.testing.memory_store import MemoryDatabase

IGNORED_FIELDS = frozenset({"created_at", "updated_at"})
"""Timestamps PostgreSQL takes from its own clock on insert (column defaults)."""


def plain(value: Any, *, read: bool = False) -> Any:
    """A store value as comparable plain data (see the module docstring). A JSON object
    of a value the memory store holds is shown as PostgreSQL returns it (through the JSON
    codec both ways); one `read` from PostgreSQL already is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name), read=read)
            for f in dataclasses.fields(value)
            if f.name not in IGNORED_FIELDS
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        if not read and all(isinstance(k, str) for k in value):
            return jsoncodec.loads(jsoncodec.dumps(value))  # a JSON column, as stored
        return {k: plain(v, read=read) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, read=read) for v in value]
    return value


def differences(memory: Any, postgres: Any, path: str = "") -> list[str]:
    """Where two plain values differ, each as 'path: memory X, postgres Y'."""
    if isinstance(memory, dict) and isinstance(postgres, dict):
        out: list[str] = []
        for key in sorted(set(memory) | set(postgres), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in postgres:
                out.append(f"{where}: memory {_short(memory[key])}, postgres has none")
            elif key not in memory:
                out.append(f"{where}: memory has none, postgres {_short(postgres[key])}")
            else:
                out += differences(memory[key], postgres[key], where)
        return out
    if isinstance(memory, list) and isinstance(postgres, list) and len(memory) == len(postgres):
        return [d for i, (m, p) in enumerate(zip(memory, postgres, strict=True))
                for d in differences(m, p, f"{path}[{i}]")]  # fmt: skip
    if memory != postgres:
        return [f"{path or 'value'}: memory {_short(memory)}, postgres {_short(postgres)}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


class StoreDiff:
    """Compares the two stores (incrementally where rows only ever accumulate)."""

    def __init__(self, memory: MemoryDatabase) -> None:
        self.memory = memory
        self._plain: dict[Any, tuple[object, Any]] = {}
        self._records: dict[uuid.UUID, object] = {}
        self._outbox_seen = 0
        """How many of the committed events were found in PostgreSQL's outbox so far."""
        self._outbox_seq = 0
        """PostgreSQL's highest outbox seq compared so far."""

    def _memory_plain(self, key: Any, value: object) -> Any:
        """`plain(value)`, cached while the memory store keeps the same (immutable) object."""
        cached = self._plain.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]
        result = plain(value)
        self._plain[key] = (value, result)
        return result

    def _changed_in_memory(self) -> set[uuid.UUID]:
        """Executions whose memory record was replaced since the last comparison (records
        are immutable: every write replaces the object)."""
        changed = set()
        for eid, ex in self.memory.executions.items():
            if self._records.get(eid) is not ex.record:
                self._records[eid] = ex.record
                changed.add(eid)
        return changed

    async def compare(
        self,
        conn: asyncpg.Connection,
        committed: Sequence[OutboxEvent],
        *,
        touched: Collection[uuid.UUID] | None = None,
        written: Collection[uuid.UUID] | None = None,
        history: bool = False,
    ) -> list[str]:
        """Every difference between the stores now ([] when they agree). `committed` is
        every event the memory store committed, in commit order.

        Executions are compared where either store may have changed them since the last
        comparison: the rows of those `touched` (leases) or `written` (commits, marks) by
        calls made on PostgreSQL and of those the memory store rewrote, the orders and fills
        of those `written`; everything of every execution when `written` is None. With
        `history`, risk events and snapshots are compared row by row too (else counted)."""
        db = self.memory
        problems: list[str] = []
        changed = self._changed_in_memory()
        if written is None:
            rows = deep = sorted(db.executions)
            self._plain.clear()  # and afresh: a record's JSON mutated in place shows too
        else:
            rows = sorted(changed | set(touched or ()) | set(written))
            deep = sorted(written)
        executions = {r["execution_id"]: r for r in await conn.fetch(Q.GET_EXECUTIONS, rows)}
        count = await conn.fetchval("SELECT count(*) FROM strategy_executions")
        if count != len(db.executions):
            problems.append(f"postgres holds {count} executions, memory {len(db.executions)}")
        for eid in rows:
            ex = db.executions.get(eid)
            row = executions.get(eid)
            if ex is None and row is None:
                continue  # a creation both refused
            if ex is None or row is None:
                where = "postgres" if ex is None else "memory"
                problems.append(f"execution {eid}: only in {where}")
                continue
            theirs = plain(R.execution_from_row(row), read=True)
            ours = self._memory_plain(("execution", eid), ex.record)
            problems += [f"execution {eid} {d}" for d in differences(ours, theirs)]
        problems += await self._orders_and_fills(conn, deep)
        problems += await self._protection(conn, deep)
        problems += await self._ledger(conn)
        problems += await self._controls(conn)
        problems += await self._cursors(conn)
        problems += await self._outbox(conn, committed)
        problems += await self._history(conn, full=history)
        return problems

    async def _orders_and_fills(
        self, conn: asyncpg.Connection, execution_ids: list[uuid.UUID]
    ) -> list[str]:
        db = self.memory
        orders: dict[uuid.UUID, list[Any]] = {}
        for row in await conn.fetch(Q.GET_ORDERS_OF, execution_ids):
            orders.setdefault(row["execution_id"], []).append(
                plain(R.order_from_row(row), read=True)
            )
        fills: dict[uuid.UUID, list[Any]] = {}
        for row in await conn.fetch(Q.GET_FILLS_OF, execution_ids):
            fills.setdefault(row["execution_id"], []).append(plain(R.fill_from_row(row), read=True))
        problems: list[str] = []
        for eid in execution_ids:
            ex = db.executions.get(eid)
            ours_orders = [] if ex is None else [
                self._memory_plain(("order", c), db.orders[c])
                for c in sorted(ex.order_ids, key=lambda c: db.orders[c].intent_seq)
            ]  # fmt: skip
            problems += [
                f"execution {eid} orders{d}"
                for d in _list_differences(ours_orders, orders.get(eid, []))
            ]
            ours_fills = [] if ex is None else [
                self._memory_plain(("fill", id(f)), f) for f in sorted(ex.fills, key=happened)
            ]  # fmt: skip
            problems += [
                f"execution {eid} fills{d}"
                for d in _list_differences(ours_fills, fills.get(eid, []))
            ]
        return problems

    async def _protection(
        self, conn: asyncpg.Connection, execution_ids: list[uuid.UUID]
    ) -> list[str]:
        """Each execution's stored protection state (`execution_protection`)."""
        rows = await conn.fetch(
            "SELECT execution_id, state, unprotected, revision FROM execution_protection"
            " WHERE execution_id = ANY($1::uuid[])",
            execution_ids,
        )
        theirs = {
            r["execution_id"]: {
                "state": jsoncodec.loads(r["state"]) if isinstance(r["state"], str) else r["state"],
                "unprotected": r["unprotected"],
                "revision": r["revision"],
            }
            for r in rows
        }
        held = self.memory.protection
        ours = {eid: plain(held[eid]) for eid in execution_ids if eid in held}
        return [f"protection {d}" for d in differences(ours, theirs)]

    async def _ledger(self, conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch("SELECT scope, scope_key, exposure FROM risk_ledger")
        theirs = {(r["scope"], r["scope_key"]): r["exposure"] for r in rows if r["exposure"]}
        ours = {scope: total for scope, total in self.memory.ledger.items() if total}
        return [f"risk ledger {d}" for d in differences(ours, theirs)]

    async def _controls(self, conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch("SELECT * FROM control_requests")
        theirs = {r["request_id"]: plain(R.control_from_row(r), read=True) for r in rows}
        ours = {
            rid: self._memory_plain(("control", rid), c) for rid, c in self.memory.controls.items()
        }
        return [f"control request {d}" for d in differences(ours, theirs)]

    async def _cursors(self, conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch("SELECT name, last_seq FROM oms_report_cursor")
        theirs = {r["name"]: r["last_seq"] for r in rows}
        return [f"report cursor {d}" for d in differences(dict(self.memory.cursors), theirs)]

    async def _outbox(
        self, conn: asyncpg.Connection, committed: Sequence[OutboxEvent]
    ) -> list[str]:
        """PostgreSQL's outbox rows past the last compared, in seq order, must be the next
        events the memory store committed, in that order, with the same content."""
        rows = await conn.fetch(
            "SELECT * FROM event_outbox WHERE seq > $1 ORDER BY seq", self._outbox_seq
        )
        problems: list[str] = []
        for row in rows:
            at = self._outbox_seen
            event = R.outbox_from_row(row).event
            if at >= len(committed):
                problems.append(f"outbox: postgres committed {event.event_id}, memory did not")
                break
            expected = committed[at]
            found = differences(_wire(expected), plain(event, read=True))
            if found:
                problems.append(f"outbox event #{at + 1} ({expected.event_id}) {found[0]}")
                break
            self._outbox_seen += 1
            self._outbox_seq = row["seq"]
        if not problems and self._outbox_seen != len(committed):
            problems.append(
                f"outbox: memory committed {len(committed)} events, postgres "
                f"{self._outbox_seen}; the first missing: {committed[self._outbox_seen].event_id}"
            )
        return problems

    async def _history(self, conn: asyncpg.Connection, *, full: bool) -> list[str]:
        db = self.memory
        if not full:
            risk, snapshots = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM risk_events), "
                "(SELECT count(*) FROM position_snapshots)"
            )
            problems = []
            if risk != len(db.risk_events):
                problems.append(f"risk events: memory {len(db.risk_events)}, postgres {risk}")
            if snapshots != len(db.snapshots):
                problems.append(f"snapshots: memory {len(db.snapshots)}, postgres {snapshots}")
            return problems
        theirs_risk = {
            r["event_id"]: plain(R.risk_event_from_row(r), read=True)
            for r in await conn.fetch("SELECT * FROM risk_events")
        }
        theirs_snaps = {
            r["snapshot_id"]: plain(R.snapshot_from_row(r), read=True)
            for r in await conn.fetch("SELECT * FROM position_snapshots")
        }
        ours_risk = {k: plain(v) for k, v in db.risk_events.items()}
        ours_snaps = {k: plain(v) for k, v in db.snapshots.items()}
        return [f"risk event {d}" for d in differences(ours_risk, theirs_risk)] + [
            f"snapshot {d}" for d in differences(ours_snaps, theirs_snaps)
        ]


def _wire(event: OutboxEvent) -> Any:
    """An event as PostgreSQL returns it: its payload is stored as the wire JSON."""
    return {**plain(event), "payload": jsoncodec.loads(encode_json(event.payload))}


def _list_differences(memory: list[Any], postgres: list[Any]) -> list[str]:
    if len(memory) != len(postgres):
        return [f": memory {len(memory)}, postgres {len(postgres)}"]
    return [f"[{i}] {d}" for i, (m, p) in enumerate(zip(memory, postgres, strict=True))
            for d in differences(m, p)]  # fmt: skip
