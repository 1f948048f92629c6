"""One commit of the in-memory store (`MemoryStore.commit`): every write of it checked against
the shared data first, then applied all at once, as one PostgreSQL transaction is."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.order_state import can_transition
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.domain.signals.decisions import SignalDecision
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    FIRST_VERSION,
    FLEET,
    CommitOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionWrite,
    FillConflictError,
    FillRecord,
    IntentConflictError,
    LedgerCaps,
    LedgerRefusedError,
    LedgerScope,
    OrderRecord,
    OutboxEvent,
    OutboxRow,
    ProtectionWrite,
    RiskEventRecord,
    SnapshotRecord,
    order_id_for,
)
from strategy_worker.testing.memory_rows import (
    DecisionKey,
    StoredExecution,
    WriteSeen,
    decision_key,
)

if TYPE_CHECKING:
    from strategy_worker.testing.memory_store import MemoryDatabase


def _next_intent_seq(write: ExecutionWrite) -> int | None:
    """The next_intent_seq a write stores: as given, else just past its intents, else
    None (kept)."""
    if write.next_intent_seq is not None:
        return write.next_intent_seq
    if write.intents:
        return max(i.intent_seq for i in write.intents) + 1
    return None


class Staging:
    """One commit, checked completely before any of it is applied (all or nothing)."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db
        self.now = db.now()
        self.records: dict[uuid.UUID, ExecutionRecord] = {}
        self.new_executions: dict[uuid.UUID, StoredExecution] = {}
        self.orders: dict[str, OrderRecord] = {}
        self.fills: dict[tuple[str, str], FillRecord] = {}
        self.fill_lists: dict[uuid.UUID, list[FillRecord]] = {}
        self.risk: dict[uuid.UUID, RiskEventRecord] = {}
        self.snapshots: dict[uuid.UUID, SnapshotRecord] = {}
        self.events: list[OutboxRow] = []
        self.controls: dict[str, ControlRequestRecord] = {}
        self.decisions: dict[DecisionKey, SignalDecision] = {}
        self.cursor: tuple[str, int] | None = None
        self.seen: list[WriteSeen] = []
        self.protection: dict[uuid.UUID, ProtectionWrite] = {}
        self.moves: dict[LedgerScope, Decimal] = {}
        self.new_buys = ZERO
        self.buy_commit: tuple[LedgerCaps | None, dict[LedgerScope, Decimal]] | None = None

    def apply(
        self, writes: Sequence[ExecutionWrite], cursor: tuple[str, int] | None
    ) -> CommitOutcome:
        created: set[uuid.UUID] = set()
        existed: set[uuid.UUID] = set()
        lost: set[uuid.UUID] = set()
        for w in sorted(writes, key=lambda w: w.execution_id):
            if w.create is not None:
                if not self._create(w):
                    existed.add(w.execution_id)
                    continue
                created.add(w.execution_id)
            elif not self._update(w):
                lost.add(w.execution_id)
                continue
            self._rows(w)
            self._exposure(w)
        self.cursor = cursor
        return CommitOutcome(
            created=frozenset(created), existed=frozenset(existed), lost=frozenset(lost)
        )

    def _record(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        if execution_id in self.records:
            return self.records[execution_id]
        ex = self.db.executions.get(execution_id)
        return ex.record if ex else None

    def _create(self, w: ExecutionWrite) -> bool:
        new = w.create
        assert new is not None
        key = (new.strategy_id, new.approved_at)
        if (
            w.execution_id in self.db.executions
            or w.execution_id in self.new_executions
            or key in self.db.by_message
        ):
            return False
        record = ExecutionRecord(
            execution_id=new.execution_id,
            strategy_id=new.strategy_id,
            user_id=new.user_id,
            approved_at=new.approved_at,
            config=copy.deepcopy(dict(new.config)),
            initial_capital=new.initial_capital,
            started_at=new.started_at,
            state=new.state if w.state is None else w.state,
            next_intent_seq=_next_intent_seq(w) or 1,
            version=FIRST_VERSION,
            owner_id=None if w.release else w.fence.owner_id,
            lease_epoch=FIRST_LEASE_EPOCH,
            lease_expires_at=None
            if w.release
            else self.now + timedelta(seconds=self.db.lease_seconds),
            heartbeat_at=None if w.release else self.now,
            created_at=self.now,
            updated_at=self.now,
        )
        self.new_executions[w.execution_id] = StoredExecution(record=record)
        self.records[w.execution_id] = record
        self.seen.append(
            WriteSeen(
                w.execution_id, w.fence.owner_id, w.fence.epoch, w.fence.owner_id, FIRST_LEASE_EPOCH
            )
        )
        return True

    def _update(self, w: ExecutionWrite) -> bool:
        rec = self._record(w.execution_id)
        if (
            rec is None
            or rec.owner_id != w.fence.owner_id
            or rec.lease_epoch != w.fence.epoch
            or rec.version != w.version - 1
        ):
            return False
        self.seen.append(
            WriteSeen(
                w.execution_id, w.fence.owner_id, w.fence.epoch, rec.owner_id, rec.lease_epoch
            )
        )
        changes: dict[str, object] = {"version": w.version, "updated_at": self.now}
        if w.state is not None:
            changes["state"] = w.state
        next_seq = _next_intent_seq(w)
        if next_seq is not None:  # never lowered: an intent's seq is never handed out again
            changes["next_intent_seq"] = max(rec.next_intent_seq, next_seq)
        if w.release:
            changes["owner_id"] = None
            changes["lease_expires_at"] = None
        self.records[w.execution_id] = replace(rec, **changes)  # type: ignore[arg-type]
        return True

    def _rows(self, w: ExecutionWrite) -> None:
        db = self.db
        for intent in w.intents:
            coid = intent.client_order_id
            stored = self.orders.get(coid) or db.orders.get(coid)
            if stored is not None:
                if stored.intent != intent:
                    raise IntentConflictError(
                        f"order intent {coid} is already recorded with different content"
                    )
                continue
            self.orders[coid] = OrderRecord(
                order_id=order_id_for(coid),
                client_order_id=coid,
                execution_id=intent.execution_id,
                intent_seq=intent.intent_seq,
                symbol=intent.symbol,
                side=intent.side,
                order_type=intent.order_type,
                purpose=intent.purpose,
                quantity=intent.quantity,
                price=intent.price,
                limit_price=intent.limit_price,
                stop_price=intent.stop_price,
                trail=intent.trail,
                parent_client_order_id=intent.parent_client_order_id,
                oco_group_id=intent.oco_group_id,
                reduce_only=intent.reduce_only,
                status=OrderStatus.PENDING,
                oms_order_id=None,
                filled_quantity=ZERO,
                filled_price=None,
                fees=ZERO,
                reason=None,
                created_at=self.now,
                updated_at=self.now,
            )
        for update in w.order_updates:
            stored = self.orders.get(update.client_order_id) or db.orders.get(
                update.client_order_id
            )
            if stored is None or stored.execution_id != w.execution_id:
                continue  # not an order of this execution: skipped, as PostgreSQL does
            if (
                stored.status.is_terminal
                and update.status is not stored.status
                and not can_transition(stored.status, update.status)
            ):
                continue  # stale: only a late fill completes a cancelled order
            if update.filled_quantity < stored.filled_quantity:
                continue
            self.orders[update.client_order_id] = replace(
                stored,
                status=update.status,
                filled_quantity=update.filled_quantity,
                filled_price=update.filled_price
                if update.filled_price is not None
                else stored.filled_price,
                oms_order_id=update.oms_order_id or stored.oms_order_id,
                fees=update.fees if update.fees is not None else stored.fees,
                reason=update.reason if update.reason is not None else stored.reason,
                updated_at=self.now,
            )
        for record in w.fills:
            key = (record.fill.client_order_id, record.fill.fill_id)
            seen = self.fills.get(key) or db.fill_keys.get(key)
            if seen is not None:
                if seen.fill != record.fill:
                    raise FillConflictError(
                        f"fill {key} is already recorded with different content"
                    )
                continue
            order = self.orders.get(record.fill.client_order_id) or db.orders.get(
                record.fill.client_order_id
            )
            if order is None or order.execution_id != w.execution_id:
                raise StoreError(
                    f"fill for {record.fill.client_order_id}, no order of {w.execution_id}"
                )
            self.fills[key] = record
            self.fill_lists.setdefault(w.execution_id, []).append(record)
        for row in w.risk_events:
            if row.event_id not in db.risk_events:
                self.risk.setdefault(row.event_id, row)
        for snap in w.snapshots:
            if snap.snapshot_id not in db.snapshots:
                self.snapshots.setdefault(snap.snapshot_id, snap)
        for event in w.events:
            if event.event_id in db.outbox_ids or any(
                r.event.event_id == event.event_id for r in self.events
            ):
                continue
            self.events.append(OutboxRow(seq=0, event=event, created_at=self.now))
        for decision in w.decisions:
            slot = decision_key(w.execution_id, decision)
            if slot not in db.decisions:
                self.decisions.setdefault(slot, decision)
        if w.protection is not None:
            self.protection[w.execution_id] = w.protection
        for done in w.controls:
            seen_control = self.controls.get(done.request_id) or db.controls.get(done.request_id)
            if seen_control is None:
                raise StoreError(f"control request {done.request_id} was never recorded")
            self.controls[done.request_id] = replace(
                seen_control,
                outcome=done.outcome,
                detail=done.detail,
                completed_at=done.completed_at,
            )

    def _exposure(self, w: ExecutionWrite) -> None:
        """The write's ledger move: its exposure replaces what its execution held."""
        self.new_buys += w.new_buys
        if w.exposure is None:
            return
        record = self.records[w.execution_id]
        old = (
            ZERO
            if w.create is not None
            else self.db.executions[w.execution_id].record.ledger_exposure
        )
        delta = w.exposure - old
        self.records[w.execution_id] = replace(record, ledger_exposure=w.exposure)
        if delta:
            for scope in (FLEET, ("user", str(record.user_id))):
                self.moves[scope] = self.moves.get(scope, ZERO) + delta

    def ledger(self, caps: LedgerCaps | None) -> dict[LedgerScope, Decimal]:
        """The totals after this commit; refuses it when its new buys pass a cap."""
        after = {s: self.db.ledger.get(s, ZERO) + d for s, d in sorted(self.moves.items())}
        if self.new_buys > 0:
            self.buy_commit = (caps, after)
        if caps is not None and self.new_buys > 0:
            for scope, total in after.items():
                cap = caps.fleet if scope == FLEET else caps.user
                if cap is not None and total > cap:
                    raise LedgerRefusedError(scope, self.db.ledger.get(scope, ZERO), cap)
        return after

    def orphan_events(self, events: Sequence[OutboxEvent]) -> None:
        known = {r.event.event_id for r in self.events}
        for event in events:
            if event.event_id not in self.db.outbox_ids and event.event_id not in known:
                self.events.append(OutboxRow(seq=0, event=event, created_at=self.now))

    def publish(self) -> None:
        """Make the staged commit visible (nothing above raised)."""
        db = self.db
        for scope, delta in self.moves.items():
            db.ledger[scope] = db.ledger.get(scope, ZERO) + delta
        if self.buy_commit is not None:
            db.buy_commits.append(self.buy_commit)
        for eid, ex in self.new_executions.items():
            db.executions[eid] = ex
            db.by_message[(ex.record.strategy_id, ex.record.approved_at)] = eid
        for eid, record in self.records.items():
            db.executions[eid].record = record
        for coid, order in self.orders.items():
            if coid not in db.orders:
                db.executions[order.execution_id].order_ids.append(coid)
            db.orders[coid] = order
        db.fill_keys.update(self.fills)
        for eid, fills in self.fill_lists.items():
            db.executions[eid].fills.extend(fills)
        db.risk_events.update(self.risk)
        db.snapshots.update(self.snapshots)
        for row in self.events:
            seq = db.next_seq
            db.next_seq += 1
            db.outbox[seq] = db.unpublished[seq] = OutboxRow(
                seq=seq, event=row.event, created_at=row.created_at
            )
            db.outbox_ids.add(row.event.event_id)
        db.controls.update(self.controls)
        db.decisions.update(self.decisions)
        for eid, write in self.protection.items():
            db.put_protection(eid, write)
        if self.cursor is not None:
            name, seq = self.cursor
            db.cursors[name] = max(db.cursors.get(name, 0), seq)
        db.writes.extend(self.seen)
