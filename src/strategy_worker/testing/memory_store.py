"""`Store` in memory, with the same semantics as the PostgreSQL store, and faults.

One `MemoryDatabase` is the shared data (several simulated workers share it); each worker
talks to it through its own `MemoryStore` handle, which holds that worker's outbox
leadership (released when the handle is closed or `crash()`ed, as a session lock is when a
process dies). Every method is atomic: a commit is applied completely or not at all.

Faults (`MemoryDatabase.faults`): an outage makes every call raise a retryable
`StoreError`; `fail_next_commit(applied=...)` makes the next commit fail before or after it
is applied — the second is a commit whose outcome the caller cannot know. Every accepted
write is checked against the lease it carries and recorded (`writes`), so a simulation
can prove that no worker ever wrote for an execution it did not hold.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.money import ZERO, money_str
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    FLEET,
    CommitOutcome,
    ControlOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionWrite,
    FillRecord,
    JsonObject,
    LedgerAudit,
    LedgerCaps,
    LedgerScope,
    LoadedExecution,
    MarkWrite,
    OrderRecord,
    OutboxEvent,
    OutboxLeadershipLostError,
    OutboxRow,
    ProtectionWrite,
    RiskEventRecord,
    SnapshotRecord,
    Store,
)
from strategy_worker.testing.memory_commit import Staging
from strategy_worker.testing.memory_rows import (
    RUNNING,
    DecisionKey,
    Faults,
    ProtectionRow,
    StoredExecution,
    WriteSeen,
    happened,
    stored_exposure,
)


class MemoryDatabase:
    """The shared data of every `MemoryStore` handle."""

    def __init__(self, *, now: Callable[[], datetime], lease_seconds: float = 15.0) -> None:
        self.now = now
        self.lease_seconds = lease_seconds
        """The lease a creating commit gives its creator (the worker's `lease_seconds`)."""
        self.faults = Faults()
        self.executions: dict[uuid.UUID, StoredExecution] = {}
        self.by_message: dict[tuple[uuid.UUID, datetime], uuid.UUID] = {}
        self.orders: dict[str, OrderRecord] = {}
        self.fill_keys: dict[tuple[str, str], FillRecord] = {}
        self.risk_events: dict[uuid.UUID, RiskEventRecord] = {}
        self.snapshots: dict[uuid.UUID, SnapshotRecord] = {}
        self.controls: dict[str, ControlRequestRecord] = {}
        self.decisions: dict[DecisionKey, SignalDecision] = {}
        """`signal_decisions`: one per (execution, symbol, timeframe, bar start, rule)."""
        self.cursors: dict[str, int] = {}
        self.outbox: dict[int, OutboxRow] = {}
        self.outbox_ids: set[uuid.UUID] = set()
        self.published: dict[int, tuple[int, datetime]] = {}
        """seq -> (published_seq, published_at)."""
        self.published_top = 0
        """The highest published_seq handed out (numbering continues from it)."""
        self.unpublished: dict[int, OutboxRow] = {}
        self.next_seq = 1
        self.relay_leader: MemoryStore | None = None
        self.writes: list[WriteSeen] = []
        self.commits = 0
        self.protection: dict[uuid.UUID, ProtectionRow] = {}
        """`execution_protection`: each execution's protection state, as last written."""
        self.ledger: dict[LedgerScope, Decimal] = {FLEET: ZERO}
        self.buy_commits: list[tuple[LedgerCaps | None, dict[LedgerScope, Decimal]]] = []
        """Every commit that recorded new buys: the caps it carried, the totals after it."""

    def handle(self) -> MemoryStore:
        return MemoryStore(self)

    def put_protection(self, execution_id: uuid.UUID, write: ProtectionWrite) -> None:
        before = self.protection.get(execution_id)
        self.protection[execution_id] = ProtectionRow(
            state=dict(write.state),
            unprotected=write.unprotected,
            revision=1 if before is None else before.revision + 1,
        )

    def move_ledger(self, user_id: uuid.UUID, delta: Decimal) -> None:
        if delta:
            for scope in (FLEET, ("user", str(user_id))):
                self.ledger[scope] = self.ledger.get(scope, ZERO) + delta

    def recomputed_exposure(self, execution_id: uuid.UUID) -> Decimal:
        """An execution's exposure from its stored positions (at its stored marks) and its
        live buy orders: what the ledger must hold for it."""
        ex = self.executions[execution_id]
        state = ex.record.state
        if not state.status.is_running:
            return ZERO
        return stored_exposure(state.positions, [self.orders[c] for c in ex.order_ids])

    def check(self) -> None:
        if self.now().timestamp() < self.faults.down_until:
            raise StoreError("database unavailable (simulated outage)", retryable=True)


class MemoryStore:
    """One worker's connection to a `MemoryDatabase`; implements `Store`."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db
        self.closed = False
        self.frozen_until = float("-inf")
        """Clock timestamp until which every call of this handle hangs (a process stopped
        by SIGSTOP, or cut off from the database): its writes land only afterwards."""

    async def _enter(self) -> MemoryDatabase:
        # A loop, not an event: the freeze may be lengthened while this call waits.
        while self.db.now().timestamp() < self.frozen_until:  # noqa: ASYNC110
            await asyncio.sleep(self.frozen_until - self.db.now().timestamp())
        if self.closed:
            raise StoreError("store handle is closed", retryable=False)
        self.db.check()
        return self.db

    # ------------------------------------------------------------------ the write path

    async def commit(
        self,
        writes: Sequence[ExecutionWrite],
        *,
        cursor: tuple[str, int] | None = None,
        caps: LedgerCaps | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> CommitOutcome:
        db = await self._enter()
        after = db.faults.commit_failures.pop(0) if db.faults.commit_failures else None
        if after is False:
            raise StoreError("commit failed (simulated)", retryable=True)
        staged = Staging(db)
        outcome = staged.apply(writes, cursor)
        staged.orphan_events(events)
        outcome = replace(outcome, ledger=staged.ledger(caps))
        staged.publish()
        db.commits += 1
        if after:
            raise StoreError("connection lost during COMMIT (simulated)", retryable=True)
        return outcome

    async def record_marks(self, writes: Sequence[MarkWrite]) -> set[uuid.UUID]:
        db = await self._enter()
        missed: set[uuid.UUID] = set()
        for w in writes:
            ex = db.executions.get(w.execution_id)
            if ex is None:
                missed.add(w.execution_id)
                continue
            rec = ex.record
            if (
                rec.owner_id != w.fence.owner_id
                or rec.lease_epoch != w.fence.epoch
                or rec.version != w.version
            ):
                missed.add(w.execution_id)
                continue
            db.writes.append(
                WriteSeen(
                    w.execution_id, w.fence.owner_id, w.fence.epoch, rec.owner_id, rec.lease_epoch
                )
            )
            state = replace(rec.state, unrealized_pnl=w.unrealized_pnl, total_pnl=w.total_pnl)
            if w.marks is not None:
                marks = {s: money_str(p) for s, p in w.marks.items()}
                state = replace(state, positions={**state.positions, "marks": marks})
            exposure = rec.ledger_exposure if w.exposure is None else w.exposure
            db.move_ledger(rec.user_id, exposure - rec.ledger_exposure)
            ex.record = replace(rec, state=state, updated_at=db.now(), ledger_exposure=exposure)
            if w.snapshot is not None:
                db.snapshots.setdefault(w.snapshot.snapshot_id, w.snapshot)
            if w.protection is not None:
                db.put_protection(w.execution_id, w.protection)
        return missed

    # ------------------------------------------------------------------ executions

    async def existing_executions(self, execution_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        db = await self._enter()
        return {e for e in execution_ids if e in db.executions}

    async def running_strategies(
        self, strategy_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, uuid.UUID]:
        db = await self._enter()
        wanted = set(strategy_ids)
        named: dict[uuid.UUID, ExecutionRecord] = {}
        for ex in db.executions.values():
            rec = ex.record
            if rec.strategy_id not in wanted or rec.state.status not in RUNNING:
                continue
            other = named.get(rec.strategy_id)
            # Should a strategy run twice, the latest approved is named (ties: lowest id).
            if other is None or (rec.approved_at, other.execution_id) > (
                other.approved_at,
                rec.execution_id,
            ):
                named[rec.strategy_id] = rec
        return {strategy: rec.execution_id for strategy, rec in named.items()}

    async def get_execution(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        ex = (await self._enter()).executions.get(execution_id)
        return ex.record if ex else None

    async def load_executions(self, execution_ids: Collection[uuid.UUID]) -> list[LoadedExecution]:
        db = await self._enter()
        out = []
        for eid in sorted(set(execution_ids)):
            ex = db.executions.get(eid)
            if ex is None:
                continue
            orders = sorted((db.orders[c] for c in ex.order_ids), key=lambda o: o.intent_seq)
            fills = sorted(ex.fills, key=happened)
            out.append(LoadedExecution(record=ex.record, orders=orders, fills=fills))
        return out

    async def load_protection(
        self, execution_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, JsonObject]:
        db = await self._enter()
        return {
            eid: copy.deepcopy(db.protection[eid].state)
            for eid in execution_ids
            if eid in db.protection
        }

    async def get_orders(self, execution_id: uuid.UUID) -> list[OrderRecord]:
        db = await self._enter()
        ex = db.executions.get(execution_id)
        if ex is None:
            return []
        return sorted((db.orders[c] for c in ex.order_ids), key=lambda o: o.intent_seq)

    async def get_fills(self, execution_id: uuid.UUID) -> list[FillRecord]:
        ex = (await self._enter()).executions.get(execution_id)
        return sorted(ex.fills, key=happened) if ex else []

    async def get_snapshots(
        self, execution_id: uuid.UUID, *, limit: int = 100
    ) -> list[SnapshotRecord]:
        rows = [
            s for s in (await self._enter()).snapshots.values() if s.execution_id == execution_id
        ]
        rows.sort(key=lambda s: s.snapshot_id)
        rows.sort(key=lambda s: s.taken_at, reverse=True)  # newest first; ties by id
        return rows[:limit]

    async def get_risk_events(self, execution_id: uuid.UUID) -> list[RiskEventRecord]:
        rows = [
            r for r in (await self._enter()).risk_events.values() if r.execution_id == execution_id
        ]
        return sorted(rows, key=lambda r: (r.occurred_at, r.event_id))

    async def ledger_totals(self, user_ids: Collection[uuid.UUID]) -> dict[LedgerScope, Decimal]:
        db = await self._enter()
        scopes = [FLEET, *(("user", str(u)) for u in user_ids)]
        return {scope: db.ledger.get(scope, ZERO) for scope in scopes}

    async def audit_ledger(self) -> LedgerAudit:
        db = await self._enter()
        repaired: dict[uuid.UUID, tuple[Decimal, Decimal]] = {}
        totals: dict[LedgerScope, Decimal] = {FLEET: ZERO}
        for eid, ex in sorted(db.executions.items()):
            rec = ex.record
            exposure = db.recomputed_exposure(eid)
            if exposure != rec.ledger_exposure:
                repaired[eid] = (rec.ledger_exposure, exposure)
                ex.record = replace(rec, ledger_exposure=exposure)
            for scope in (FLEET, ("user", str(rec.user_id))):
                totals[scope] = totals.get(scope, ZERO) + exposure
        difference = sum(
            (
                abs(totals.get(s, ZERO) - db.ledger.get(s, ZERO))
                for s in set(totals) | set(db.ledger)
            ),
            ZERO,
        )
        db.ledger = totals
        return LedgerAudit(difference=difference, repaired=repaired)

    async def fleet_pnl(self) -> Decimal:
        db = await self._enter()
        return sum((ex.record.state.total_pnl for ex in db.executions.values()), ZERO)

    # ------------------------------------------------------------------ leases

    async def acquire_executions(
        self, owner_id: str, *, lease_seconds: float, limit: int, reclaim: bool = False
    ) -> list[ExecutionRecord]:
        db = await self._enter()
        now = db.now()
        taken: list[ExecutionRecord] = []
        candidates = sorted(
            (ex for ex in db.executions.values() if ex.record.state.status in RUNNING),
            key=lambda ex: (
                ex.record.lease_expires_at is not None,
                ex.record.lease_expires_at or now,
                ex.record.created_at,
            ),
        )
        for ex in candidates:
            if len(taken) >= limit:
                break
            rec = ex.record
            free = rec.owner_id is None or (
                rec.lease_expires_at is not None and rec.lease_expires_at <= now
            )
            if not (free or (reclaim and rec.owner_id == owner_id)):
                continue
            ex.record = replace(
                rec,
                owner_id=owner_id,
                lease_epoch=rec.lease_epoch + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                heartbeat_at=now,
            )
            taken.append(ex.record)
        return taken

    async def renew_leases(
        self, owner_id: str, execution_ids: Collection[uuid.UUID], *, lease_seconds: float
    ) -> set[uuid.UUID]:
        db = await self._enter()
        now = db.now()
        held = set()
        for eid in execution_ids:
            ex = db.executions.get(eid)
            if ex is not None and ex.record.owner_id == owner_id:
                ex.record = replace(
                    ex.record,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    heartbeat_at=now,
                )
                held.add(eid)
        return held

    async def release_executions(
        self, owner_id: str, execution_ids: Collection[uuid.UUID]
    ) -> set[uuid.UUID]:
        db = await self._enter()
        released = set()
        for eid in execution_ids:
            ex = db.executions.get(eid)
            if ex is not None and ex.record.owner_id == owner_id:
                ex.record = replace(ex.record, owner_id=None, lease_expires_at=None)
                released.add(eid)
        return released

    # ------------------------------------------------------------------ control and cursor

    async def record_control_request(self, request: ControlRequestRecord) -> bool:
        db = await self._enter()
        if request.request_id in db.controls:
            return False
        db.controls[request.request_id] = request
        return True

    async def complete_control_request(
        self, request_id: str, outcome: ControlOutcome, *, detail: str, completed_at: datetime
    ) -> None:
        db = await self._enter()
        seen = db.controls.get(request_id)
        if seen is None:
            raise StoreError(f"control request {request_id} was never recorded")
        db.controls[request_id] = replace(
            seen, outcome=outcome, detail=detail, completed_at=completed_at
        )

    async def get_control_request(self, request_id: str) -> ControlRequestRecord | None:
        return (await self._enter()).controls.get(request_id)

    async def list_pending_control_requests(
        self, execution_ids: Collection[uuid.UUID], *, strategy_ids: Collection[uuid.UUID] = ()
    ) -> list[ControlRequestRecord]:
        db = await self._enter()
        ids = set(execution_ids)
        strategies = {str(s) for s in strategy_ids}
        rows = [
            r
            for r in db.controls.values()
            if r.outcome is ControlOutcome.RECEIVED
            and (
                (r.execution_id is not None and r.execution_id in ids)
                or (r.execution_id is None and str(r.payload.get("strategy_id")) in strategies)
            )
        ]
        return sorted(rows, key=lambda r: (r.received_at, r.request_id))

    async def get_report_cursor(self, name: str) -> int:
        return (await self._enter()).cursors.get(name, 0)

    async def set_report_cursor(self, name: str, last_seq: int) -> None:
        db = await self._enter()
        db.cursors[name] = max(db.cursors.get(name, 0), last_seq)

    # ------------------------------------------------------------------ outbox

    async def claim_outbox(self, *, limit: int) -> list[OutboxRow]:
        db = await self._enter()
        if db.relay_leader is None or db.relay_leader.closed:
            db.relay_leader = self
        if db.relay_leader is not self:
            return []
        rows: list[OutboxRow] = []
        for row in db.unpublished.values():  # in seq order (insertion order of a dict)
            rows.append(row)
            if len(rows) >= limit:
                break
        return rows

    async def mark_published(self, seqs: Sequence[int]) -> None:
        if len(set(seqs)) != len(seqs):
            raise ValueError("mark_published got a seq twice")
        db = await self._enter()
        if db.relay_leader is not self:
            raise OutboxLeadershipLostError("this store does not lead the outbox")
        unknown = [s for s in seqs if s not in db.outbox]
        if unknown:
            raise StoreError(f"mark_published: seq(s) {unknown[:5]} were never in the outbox")
        top = db.published_top
        n = 0
        for seq in seqs:
            if seq in db.outbox and seq not in db.published:
                n += 1
                db.published[seq] = (top + n, db.now())
                db.unpublished.pop(seq, None)
        db.published_top = top + n

    async def prune_outbox(self, *, published_before: datetime, limit: int) -> int:
        db = await self._enter()
        old = [
            s
            for s, (number, at) in sorted(db.published.items(), key=lambda p: p[1][1])
            if at < published_before and number != db.published_top  # the last one stays
        ][:limit]
        for seq in old:
            row = db.outbox.pop(seq)
            db.outbox_ids.discard(row.event.event_id)
            del db.published[seq]
        return len(old)

    # ------------------------------------------------------------------ lifecycle

    async def ping(self) -> bool:
        if self.db.now().timestamp() < self.frozen_until:
            return False
        try:
            await self._enter()
        except StoreError:
            return False
        return True

    async def close(self) -> None:
        self.crash()

    def crash(self) -> None:
        """The process holding this handle is gone: its leadership goes with it."""
        self.closed = True
        if self.db.relay_leader is self:
            self.db.relay_leader = None


def _implements_store(store: MemoryStore) -> Store:
    """Never called: mypy proves here that MemoryStore satisfies the Store protocol."""
    return store
