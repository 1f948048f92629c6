"""The simulation against the real PostgreSQL store: every store call the in-memory store
applies is performed again, in the same order, on a `PostgresStore`, and the two answers
must agree.

The in-memory store stays the source of truth: the runtime gets its answers, it injects
the faults (outages, commits failing before or after they apply, frozen handles), and the
simulation's invariants read it. `MirrorStore` (one per simulated worker) forwards each
call to its memory handle and then, under one lock shared by every worker, makes the same
call on the twin (`PostgresTwin.postgres`): the lock covers the memory call and its twin,
so PostgreSQL sees the calls of all workers in exactly the order the memory store did.

- Forwarded: every call the memory store reached (not refused by an outage, a closed
  handle or a commit failing before it applies), including a commit that applied and then
  raised (an unknown outcome) and a commit the memory store refused for its content (an
  intent or fill conflict, the ledger's caps, a fill for an unknown order): PostgreSQL
  must refuse it the same way.
- Compared at once: commit outcomes (created, existed, lost, the ledger totals moved) and
  refusals (the error's class; the ledger's scope, total and cap), `record_marks` misses,
  lease acquisitions (the records taken, with epoch and expiry), renewals, releases,
  control requests recorded or completed, and every read the runtime makes.
- The outbox relay (`claim_outbox`, `mark_published`, `prune_outbox`) runs on the memory
  store only: its leadership is per handle there and per session in PostgreSQL, and its
  numbering is the relay's. Instead the step check (`store_diff.py`) finds in
  PostgreSQL's outbox exactly the events the memory store committed, in its commit order
  (the relay keeps published events 24 hours, longer than a run: nothing is pruned, so
  both stores skip the same replayed events).
- Time: PostgreSQL's `now()` is the simulation's virtual clock (`postgres_twin.py`).

A difference is recorded (`PostgresTwin.divergences`), never raised inside the runtime's
call; the simulation's step check reports it as an InvariantViolation. The PostgreSQL call
runs in a task of its own, shielded: a worker cancelled (killed) while its twin call is in
flight cannot leave the two stores apart. While it is in flight the memory store is ahead
of the caller (on the memory store alone a call returns at once), so the step check first
waits for every such caller to resume (`PostgresTwin.settle`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from strategy_worker.store import (
    CommitOutcome,
    ControlOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionWrite,
    FillRecord,
    JsonObject,
    LedgerAudit,
    LedgerCaps,
    LedgerRefusedError,
    LedgerScope,
    LoadedExecution,
    MarkWrite,
    OrderRecord,
    OutboxEvent,
    OutboxRow,
    RiskEventRecord,
    SnapshotRecord,
    Store,
)
from strategy_worker.testing.memory_store import MemoryStore
from strategy_worker.testing.simulation.postgres_twin import PostgresTwin
from strategy_worker.testing.simulation.store_diff import differences, plain
from strategy_worker.testing.virtual_time import waiting_for_real_io

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Result:
    """What one store answered: a value or an error."""

    value: Any = None
    error: Exception | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


async def _outcome(call: Awaitable[Any]) -> _Result:
    try:
        return _Result(value=await call)
    except Exception as exc:  # compared, then re-raised to the caller
        return _Result(error=exc)


Judge = Callable[[_Result, _Result], str | None]


def same_values(memory: _Result, postgres: _Result) -> str | None:
    """Both answered alike: the same value, or errors of the same class."""
    if memory.error is not None or postgres.error is not None:
        return _same_errors(memory, postgres)
    found = differences(plain(memory.value), plain(postgres.value, read=True))
    return "; ".join(found[:3]) if found else None


def _same_errors(memory: _Result, postgres: _Result) -> str | None:
    m, p = memory.error, postgres.error
    if type(m) is not type(p):
        return f"memory {_describe(m)}, postgres {_describe(p)}"
    if isinstance(m, LedgerRefusedError) and isinstance(p, LedgerRefusedError):
        ours, theirs = (m.scope, m.exposure, m.cap), (p.scope, p.exposure, p.cap)
        if ours != theirs:
            return f"ledger refusal: memory {ours}, postgres {theirs}"
    return None


def _describe(error: Exception | None) -> str:
    return "succeeded" if error is None else f"raised {type(error).__name__}: {error}"


def by_id(key: Callable[[Any], uuid.UUID]) -> Judge:
    """Lists compared as sets of records keyed by `key` (their order is unspecified)."""

    def judge(memory: _Result, postgres: _Result) -> str | None:
        if memory.error is not None or postgres.error is not None:
            return _same_errors(memory, postgres)
        ours = {key(v): plain(v) for v in memory.value}
        theirs = {key(v): plain(v, read=True) for v in postgres.value}
        found = differences(ours, theirs)
        return "; ".join(found[:3]) if found else None

    return judge


class MirrorStore:
    """One worker's store: its memory handle, mirrored on the twin (module docstring)."""

    def __init__(self, memory: MemoryStore, twin: PostgresTwin) -> None:
        self.memory = memory
        self.twin = twin

    # ------------------------------------------------------------------ the protocol

    def _frozen(self) -> bool:
        return self.memory.db.now().timestamp() < self.memory.frozen_until

    def _reachable(self) -> bool:
        """The memory store will reach its data (not closed, no outage)."""
        db = self.memory.db
        return not self.memory.closed and db.now().timestamp() >= db.faults.down_until

    async def _enter(self) -> None:
        """Take the lock once this handle is not frozen (a frozen handle waits without
        it, as its calls hang before they reach the data)."""
        while True:
            while self._frozen():  # noqa: ASYNC110 (the freeze may be lengthened)
                await asyncio.sleep(self.memory.frozen_until - self.memory.db.now().timestamp())
            await self.twin.lock.acquire()
            if not self._frozen():
                return
            self.twin.lock.release()

    async def _mirrored(
        self,
        name: str,
        memory: Callable[[], Awaitable[T]],
        postgres: Callable[[], Awaitable[Any]],
        judge: Judge = same_values,
        *,
        forward: Callable[[], bool] | None = None,
        after_memory: Callable[[], None] | None = None,
        touches: Iterable[uuid.UUID] = (),
        writes: Iterable[uuid.UUID] | None = (),
        touched_by: Callable[[Any], Iterable[uuid.UUID]] | None = None,
    ) -> T:
        """`memory()`, then (if the memory store reached its data and `forward()` agrees)
        `postgres()` under the same lock hold, judged; returns (or raises) memory's answer."""
        await self._enter()
        try:
            send = self._reachable() and (forward is None or forward())
            ours = await _outcome(memory())  # never suspends: the handle is not frozen
            if after_memory is not None:
                after_memory()
        except BaseException:
            self.twin.lock.release()
            raise
        if not send:
            self.twin.lock.release()
            return ours.unwrap()  # type: ignore[no-any-return]
        self.twin.forwarded[name] += 1
        self.twin.touch(touches)
        self.twin.write(writes)
        self.twin.opened()
        try:
            task = self.twin.spawn(self._twin(name, postgres, judge, ours, touched_by))
            await asyncio.shield(task)
        finally:
            self.twin.closed()
        return ours.unwrap()  # type: ignore[no-any-return]

    async def _twin(
        self,
        name: str,
        postgres: Callable[[], Awaitable[Any]],
        judge: Judge,
        ours: _Result,
        touched_by: Callable[[Any], Iterable[uuid.UUID]] | None,
    ) -> None:
        """The PostgreSQL half of a call; holds (then releases) the lock `_mirrored` took."""
        try:
            with waiting_for_real_io():
                await self.twin.set_clock()
                theirs = await _outcome(postgres())
            if ours.error is not None and name != "commit":  # commit counts its own
                self.twin.refused[f"{name} {type(ours.error).__name__}"] += 1
            if touched_by is not None:
                for result in (ours, theirs):
                    if result.error is None:
                        self.twin.touch(touched_by(result.value))
            problem = judge(ours, theirs)
            if problem:
                self.twin.divergences.append(f"{name}: {problem}")
        except Exception as exc:
            self.twin.divergences.append(f"{name}: the twin call failed: {exc!r}")
        finally:
            self.twin.lock.release()

    # ------------------------------------------------------------------ the write path

    async def commit(
        self,
        writes: Sequence[ExecutionWrite],
        *,
        cursor: tuple[str, int] | None = None,
        caps: LedgerCaps | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> CommitOutcome:
        db = self.memory.db
        start = {"commits": db.commits, "seq": db.next_seq}

        def reaches_its_data() -> bool:  # not a commit set to fail before applying
            return not (db.faults.commit_failures and db.faults.commit_failures[0] is False)

        def record_events() -> None:
            self.twin.committed.extend(db.outbox[s].event for s in range(start["seq"], db.next_seq))

        def judge(memory: _Result, postgres: _Result) -> str | None:
            applied = db.commits > start["commits"]
            if applied:
                if postgres.error is not None:
                    return f"memory applied it, postgres {_describe(postgres.error)}"
                if memory.error is not None:
                    self.twin.refused["commit applied, outcome lost"] += 1
                    return None  # nothing to compare but the rows (the step check)
                return _same_outcome(memory.value, postgres.value)
            if memory.error is None:
                return "memory neither applied it nor raised"
            self.twin.refused[f"commit {type(memory.error).__name__}"] += 1
            return _same_errors(memory, postgres)

        async def memory() -> CommitOutcome:
            start["commits"], start["seq"] = db.commits, db.next_seq
            return await self.memory.commit(writes, cursor=cursor, caps=caps, events=events)

        return await self._mirrored(
            "commit",
            memory,
            lambda: self.twin.postgres.commit(writes, cursor=cursor, caps=caps, events=events),
            judge,
            forward=reaches_its_data,
            after_memory=record_events,
            writes=[w.execution_id for w in writes],
        )

    async def record_marks(self, writes: Sequence[MarkWrite]) -> set[uuid.UUID]:
        return await self._mirrored(
            "record_marks",
            lambda: self.memory.record_marks(writes),
            lambda: self.twin.postgres.record_marks(writes),
            writes=[w.execution_id for w in writes],
        )

    async def ledger_totals(self, user_ids: Collection[uuid.UUID]) -> dict[LedgerScope, Decimal]:
        return await self._mirrored(
            "ledger_totals",
            lambda: self.memory.ledger_totals(user_ids),
            lambda: self.twin.postgres.ledger_totals(user_ids),
        )

    async def audit_ledger(self) -> LedgerAudit:
        return await self._mirrored(
            "audit_ledger", self.memory.audit_ledger, self.twin.postgres.audit_ledger, writes=None
        )

    # ------------------------------------------------------------------ executions

    async def existing_executions(self, execution_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        return await self._mirrored(
            "existing_executions",
            lambda: self.memory.existing_executions(execution_ids),
            lambda: self.twin.postgres.existing_executions(execution_ids),
        )

    async def running_strategies(
        self, strategy_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, uuid.UUID]:
        return await self._mirrored(
            "running_strategies",
            lambda: self.memory.running_strategies(strategy_ids),
            lambda: self.twin.postgres.running_strategies(strategy_ids),
        )

    async def get_execution(self, execution_id: uuid.UUID) -> ExecutionRecord | None:
        return await self._mirrored(
            "get_execution",
            lambda: self.memory.get_execution(execution_id),
            lambda: self.twin.postgres.get_execution(execution_id),
        )

    async def load_executions(self, execution_ids: Collection[uuid.UUID]) -> list[LoadedExecution]:
        return await self._mirrored(
            "load_executions",
            lambda: self.memory.load_executions(execution_ids),
            lambda: self.twin.postgres.load_executions(execution_ids),
            by_id(lambda loaded: loaded.record.execution_id),
        )

    async def load_protection(
        self, execution_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, JsonObject]:
        return await self._mirrored(
            "load_protection",
            lambda: self.memory.load_protection(execution_ids),
            lambda: self.twin.postgres.load_protection(execution_ids),
        )

    async def get_orders(self, execution_id: uuid.UUID) -> list[OrderRecord]:
        return await self._mirrored(
            "get_orders",
            lambda: self.memory.get_orders(execution_id),
            lambda: self.twin.postgres.get_orders(execution_id),
        )

    async def get_fills(self, execution_id: uuid.UUID) -> list[FillRecord]:
        return await self._mirrored(
            "get_fills",
            lambda: self.memory.get_fills(execution_id),
            lambda: self.twin.postgres.get_fills(execution_id),
        )

    async def get_snapshots(
        self, execution_id: uuid.UUID, *, limit: int = 100
    ) -> list[SnapshotRecord]:
        """Memory only (the runtime never reads them; the step check compares the rows)."""
        return await self.memory.get_snapshots(execution_id, limit=limit)

    async def get_risk_events(self, execution_id: uuid.UUID) -> list[RiskEventRecord]:
        """Memory only (the runtime never reads them; the step check compares the rows)."""
        return await self.memory.get_risk_events(execution_id)

    async def fleet_pnl(self) -> Decimal:
        return await self._mirrored(
            "fleet_pnl", self.memory.fleet_pnl, self.twin.postgres.fleet_pnl
        )

    # ------------------------------------------------------------------ leases

    async def acquire_executions(
        self, owner_id: str, *, lease_seconds: float, limit: int, reclaim: bool = False
    ) -> list[ExecutionRecord]:
        return await self._mirrored(
            "acquire_executions",
            lambda: self.memory.acquire_executions(
                owner_id, lease_seconds=lease_seconds, limit=limit, reclaim=reclaim
            ),
            lambda: self.twin.postgres.acquire_executions(
                owner_id, lease_seconds=lease_seconds, limit=limit, reclaim=reclaim
            ),
            by_id(lambda record: record.execution_id),
            touched_by=lambda records: [r.execution_id for r in records],
        )

    async def renew_leases(
        self, owner_id: str, execution_ids: Collection[uuid.UUID], *, lease_seconds: float
    ) -> set[uuid.UUID]:
        return await self._mirrored(
            "renew_leases",
            lambda: self.memory.renew_leases(owner_id, execution_ids, lease_seconds=lease_seconds),
            lambda: self.twin.postgres.renew_leases(
                owner_id, execution_ids, lease_seconds=lease_seconds
            ),
            touches=execution_ids,
        )

    async def release_executions(
        self, owner_id: str, execution_ids: Collection[uuid.UUID]
    ) -> set[uuid.UUID]:
        return await self._mirrored(
            "release_executions",
            lambda: self.memory.release_executions(owner_id, execution_ids),
            lambda: self.twin.postgres.release_executions(owner_id, execution_ids),
            touches=execution_ids,
        )

    # ------------------------------------------------------------------ control, cursor

    async def record_control_request(self, request: ControlRequestRecord) -> bool:
        return await self._mirrored(
            "record_control_request",
            lambda: self.memory.record_control_request(request),
            lambda: self.twin.postgres.record_control_request(request),
        )

    async def complete_control_request(
        self, request_id: str, outcome: ControlOutcome, *, detail: str, completed_at: datetime
    ) -> None:
        await self._mirrored(
            "complete_control_request",
            lambda: self.memory.complete_control_request(
                request_id, outcome, detail=detail, completed_at=completed_at
            ),
            lambda: self.twin.postgres.complete_control_request(
                request_id, outcome, detail=detail, completed_at=completed_at
            ),
        )

    async def get_control_request(self, request_id: str) -> ControlRequestRecord | None:
        return await self._mirrored(
            "get_control_request",
            lambda: self.memory.get_control_request(request_id),
            lambda: self.twin.postgres.get_control_request(request_id),
        )

    async def list_pending_control_requests(
        self, execution_ids: Collection[uuid.UUID], *, strategy_ids: Collection[uuid.UUID] = ()
    ) -> list[ControlRequestRecord]:
        return await self._mirrored(
            "list_pending_control_requests",
            lambda: self.memory.list_pending_control_requests(
                execution_ids, strategy_ids=strategy_ids
            ),
            lambda: self.twin.postgres.list_pending_control_requests(
                execution_ids, strategy_ids=strategy_ids
            ),
        )

    async def get_report_cursor(self, name: str) -> int:
        return await self._mirrored(
            "get_report_cursor",
            lambda: self.memory.get_report_cursor(name),
            lambda: self.twin.postgres.get_report_cursor(name),
        )

    async def set_report_cursor(self, name: str, last_seq: int) -> None:
        await self._mirrored(
            "set_report_cursor",
            lambda: self.memory.set_report_cursor(name, last_seq),
            lambda: self.twin.postgres.set_report_cursor(name, last_seq),
        )

    # ------------------------------------------------------------------ the outbox (memory)

    async def claim_outbox(self, *, limit: int) -> list[OutboxRow]:
        return await self.memory.claim_outbox(limit=limit)

    async def mark_published(self, seqs: Sequence[int]) -> None:
        await self.memory.mark_published(seqs)

    async def prune_outbox(self, *, published_before: datetime, limit: int) -> int:
        return await self.memory.prune_outbox(published_before=published_before, limit=limit)

    # ------------------------------------------------------------------ lifecycle

    async def ping(self) -> bool:
        return await self.memory.ping()

    async def close(self) -> None:
        await self.memory.close()


def _same_outcome(memory: CommitOutcome, postgres: CommitOutcome) -> str | None:
    found = [
        f"{name}: memory {sorted(map(str, ours))}, postgres {sorted(map(str, theirs))}"
        for name, ours, theirs in (
            ("created", memory.created, postgres.created),
            ("existed", memory.existed, postgres.existed),
            ("lost", memory.lost, postgres.lost),
        )
        if ours != theirs
    ]
    if dict(memory.ledger) != dict(postgres.ledger):
        found.append(f"ledger: memory {dict(memory.ledger)}, postgres {dict(postgres.ledger)}")
    return "; ".join(found) or None


def _implements_store(store: MirrorStore) -> Store:
    """Never called: mypy proves here that MirrorStore satisfies the Store protocol."""
    return store
