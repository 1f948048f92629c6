"""The one write path of `PostgresStore`: `commit` (a batch of execution writes in one
transaction, fenced by the lease and by `state_version`) and `record_marks` (quiet ticks).

A commit runs a constant number of statements whatever the batch size, each kind of row in
one `unnest` statement for the whole batch, skipping the kinds the batch does not carry:

1. BEGIN;
2. the creations, inserted in execution_id order (ON CONFLICT DO NOTHING);
3. every other write's execution row locked in execution_id order (FOR NO KEY UPDATE),
   and 4. updated where the fence (owner, epoch) holds and `state_version` is the write's
   version - 1;
5. the intents (protective ones, with their stop, trail, group and reduce-only columns,
   in a statement of their own), 6. the order updates, 7. the fills, 8. the control
   completions, 9. risk events, snapshots, outbox events and the report cursor (one
   statement), 10. the signal decisions (one statement), 11. the protection states
   (`execution_protection`, one upsert), all for the writes that were created or held
   only;
11. the risk ledger's totals, moved by what the applied writes' exposures changed, and
    checked against the caps when the commit records new buys (one statement);
12. COMMIT.

A replayed intent or fill costs one more read (the stored rows, compared in Python).

Everything a write carries is written, or none of it: a write whose fence or version fails
is skipped whole (`CommitOutcome.lost`), and a conflict anywhere (an intent or a fill that
was recorded before with other content) rolls the whole batch back.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres import protection as P
from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.adapters.postgres.base import StoreBase
from strategy_worker.adapters.postgres.market_data import (
    DECISIONS_BATCH_INSERT_SQL,
    batch_decision_params,
)
from strategy_worker.domain.money import money_str
from strategy_worker.domain.order_state import TRANSITIONS
from strategy_worker.domain.orders import OrderIntent, OrderStatus
from strategy_worker.domain.protection.state import STATE_VERSION
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    FIRST_VERSION,
    FLEET,
    CommitOutcome,
    ExecutionWrite,
    FillConflictError,
    FillRecord,
    IntentConflictError,
    JsonObject,
    LedgerCaps,
    LedgerRefusedError,
    LedgerScope,
    MarkWrite,
    OrderUpdate,
    OutboxEvent,
    ProtectionWrite,
)

_TERMINAL = [s.value for s in OrderStatus if s.is_terminal]
_TERMINAL_MOVES = [
    (s.value, to.value) for s in OrderStatus if s.is_terminal for to in TRANSITIONS[s]
]
"""The moves out of a terminal status the order state machine allows (a late fill)."""


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """A validated batch: creations and updates, each in execution_id order (the lock
    order), with the intents and fills of every write deduplicated."""

    creations: list[ExecutionWrite]
    updates: list[ExecutionWrite]


def plan_commit(writes: Sequence[ExecutionWrite]) -> CommitPlan:
    """Check a batch before any I/O and put it in lock order.

    ValueError for what only a caller bug produces (two writes for one execution, rows of
    another execution, a creation that is not at FIRST_VERSION and FIRST_LEASE_EPOCH, a
    next_intent_seq that does not exceed the write's intents, one control request completed
    twice). IntentConflictError / FillConflictError when the batch itself holds one client
    order id, or one (client order id, fill id), with two contents. Identical repeats inside
    the batch are dropped.
    """
    seen: set[uuid.UUID] = set()
    intents: dict[str, OrderIntent] = {}
    fills: dict[tuple[str, str], FillRecord] = {}
    requests: set[str] = set()
    planned: list[ExecutionWrite] = []
    for write in writes:
        if write.execution_id in seen:
            raise ValueError(f"two writes for execution {write.execution_id} in one commit")
        seen.add(write.execution_id)
        _check_write(write)
        for completion in write.controls:
            if completion.request_id in requests:
                raise ValueError(f"control request {completion.request_id!r} completed twice")
            requests.add(completion.request_id)
        planned.append(
            dataclasses.replace(
                write,
                intents=_unique_intents(write.intents, intents),
                fills=_unique_fills(write.fills, fills),
            )
        )
    planned.sort(key=lambda w: w.execution_id)
    return CommitPlan(
        creations=[w for w in planned if w.create is not None],
        updates=[w for w in planned if w.create is None],
    )


def _check_write(write: ExecutionWrite) -> None:
    eid = write.execution_id
    if not write.fence.owner_id:
        raise ValueError(f"write for {eid}: the fence needs an owner_id")
    if write.create is not None:
        if write.create.execution_id != eid:
            raise ValueError(f"write for {eid} creates {write.create.execution_id}")
        if write.version != FIRST_VERSION or write.fence.epoch != FIRST_LEASE_EPOCH:
            raise ValueError(
                f"creation of {eid} must be at version {FIRST_VERSION} and epoch "
                f"{FIRST_LEASE_EPOCH}, not {write.version} and {write.fence.epoch}"
            )
    elif write.version <= FIRST_VERSION:
        raise ValueError(f"write for {eid} at version {write.version}: only a creation is at 1")
    owned: list[tuple[str, uuid.UUID]] = [
        *((i.client_order_id, i.execution_id) for i in write.intents),
        *((f"risk event {e.event_id}", e.execution_id) for e in write.risk_events),
        *((f"snapshot {s.snapshot_id}", s.execution_id) for s in write.snapshots),
        *((f"event {e.event_id}", e.execution_id) for e in write.events),
    ]
    for what, belongs_to in owned:
        if belongs_to != eid:
            raise ValueError(f"{what} belongs to {belongs_to}, not to the write for {eid}")
    highest = max((i.intent_seq for i in write.intents), default=0)
    if write.next_intent_seq is not None and write.next_intent_seq <= highest:
        raise ValueError(
            f"next_intent_seq {write.next_intent_seq} of {eid} must exceed the highest "
            f"intent_seq {highest}"
        )


def _unique_intents(
    intents: Sequence[OrderIntent], seen: dict[str, OrderIntent]
) -> tuple[OrderIntent, ...]:
    kept: list[OrderIntent] = []
    for intent in intents:
        before = seen.get(intent.client_order_id)
        if before is None:
            seen[intent.client_order_id] = intent
            kept.append(intent)
        elif before != intent:
            raise IntentConflictError(
                f"order intent {intent.client_order_id} appears twice in one commit with "
                "different content"
            )
    return tuple(kept)


def _unique_fills(
    fills: Sequence[FillRecord], seen: dict[tuple[str, str], FillRecord]
) -> tuple[FillRecord, ...]:
    kept: list[FillRecord] = []
    for record in fills:
        key = (record.fill.client_order_id, record.fill.fill_id)
        before = seen.get(key)
        if before is None:
            seen[key] = record
            kept.append(record)
        elif before.fill != record.fill:
            raise FillConflictError(
                f"fill {key[1]} of order {key[0]} appears twice in one commit with different "
                "content"
            )
    return tuple(kept)


def merge_updates(updates: Sequence[OrderUpdate]) -> list[OrderUpdate]:
    """One update per order (an UPDATE ... FROM must not see an order twice): later updates
    win, but a field a later update leaves None keeps the earlier value (ack then fill)."""
    merged: dict[str, OrderUpdate] = {}
    for update in updates:
        before = merged.get(update.client_order_id)
        if before is not None:
            update = dataclasses.replace(
                update,
                oms_order_id=update.oms_order_id or before.oms_order_id,
                filled_price=before.filled_price
                if update.filled_price is None
                else update.filled_price,
                fees=before.fees if update.fees is None else update.fees,
                reason=before.reason if update.reason is None else update.reason,
            )
        merged[update.client_order_id] = update
    return list(merged.values())


class CommitWrites(StoreBase):
    """`commit` and `record_marks` (part of `PostgresStore`)."""

    _creation_lease_seconds: float
    """The lease a creation's owner gets (set by PostgresStore)."""

    async def commit(
        self,
        writes: Sequence[ExecutionWrite],
        *,
        cursor: tuple[str, int] | None = None,
        caps: LedgerCaps | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> CommitOutcome:
        """Apply every write in one transaction (see the module docstring for the order).

        A creation inserts the execution owned by its fence's owner at FIRST_LEASE_EPOCH
        with a lease of `lease_seconds` (the store's), at FIRST_VERSION; if the execution
        (or its message key) already existed, nothing of that write is written and it is
        reported in `existed`. Any other write applies only where owner, epoch and
        `state_version == version - 1` hold, else nothing of it is written and it is in
        `lost` (an unknown execution too); it sets `state_version = version`, the state and
        next_intent_seq when given (never lowering it), and with `release` clears the lease.
        The cursor advances whatever became of the writes (never backwards).

        Order updates skip what is stale (out of a terminal status, but for a late fill
        completing a cancelled order; a lower filled quantity) and orders that are not the
        write's execution's.

        Raises, with nothing written: IntentConflictError / FillConflictError for a key
        recorded with other content; StoreError (not retryable) for a fill naming an order
        that is not the write's execution's (a fill is never dropped) or a control
        completion for a request never recorded; ValueError for a malformed batch (see
        `plan_commit`).
        """
        plan = plan_commit(writes)
        if not writes and cursor is None and not events:
            return CommitOutcome()
        async with self._tx("commit") as conn:
            created = await self._create(conn, plan.creations)
            held, before = await self._apply(conn, plan.updates)
            applied = created | held
            live = sorted(
                (w for w in (*plan.creations, *plan.updates) if w.execution_id in applied),
                key=lambda w: w.execution_id,
            )
            intents = [i for w in live for i in w.intents]
            await self._insert_intents(conn, [i for i in intents if not _protective(i)])
            await self._insert_intents(
                conn, [i for i in intents if _protective(i)], all_columns=True
            )
            await self._apply_order_updates(conn, live)
            await self._insert_fills(conn, live)
            await self._complete_controls(conn, live)
            await self._insert_history(conn, live, cursor, events)
            await self._insert_decisions(conn, live)
            await _upsert_protection(
                conn, [(w.execution_id, w.protection) for w in live if w.protection is not None]
            )
            moves = _ledger_moves(live, before)
            new_buys = sum((w.new_buys for w in live), Decimal(0))
            ledger = await move_ledger(conn, moves, caps if new_buys > 0 else None)
        return CommitOutcome(
            created=frozenset(created),
            existed=frozenset(w.execution_id for w in plan.creations) - created,
            lost=frozenset(w.execution_id for w in plan.updates) - held,
            ledger=ledger,
        )

    async def _create(
        self, conn: asyncpg.Connection, creations: Sequence[ExecutionWrite]
    ) -> frozenset[uuid.UUID]:
        if not creations:
            return frozenset()
        news = [w.create for w in creations if w.create is not None]
        states = [
            n.state if w.state is None else w.state for w, n in zip(creations, news, strict=True)
        ]
        seqs = [_first_intent_seq(w) for w in creations]
        owners = [None if w.release else w.fence.owner_id for w in creations]
        rows = await conn.fetch(
            Q.CREATE_EXECUTIONS,
            [n.execution_id for n in news],
            [n.strategy_id for n in news],
            [n.user_id for n in news],
            [n.approved_at for n in news],
            [jsoncodec.dumps(n.config) for n in news],
            [R.num(n.initial_capital) for n in news],
            [n.started_at for n in news],
            seqs,
            owners,
            *R.state_columns(states),
            FIRST_LEASE_EPOCH,
            float(self._creation_lease_seconds),
            FIRST_VERSION,
            [R.num(w.exposure or Decimal(0)) for w in creations],
        )
        return frozenset(r["execution_id"] for r in rows)

    async def _apply(
        self, conn: asyncpg.Connection, updates: Sequence[ExecutionWrite]
    ) -> tuple[frozenset[uuid.UUID], dict[uuid.UUID, tuple[uuid.UUID, Decimal]]]:
        """The held writes, and (user, ledger exposure) of every locked execution."""
        if not updates:
            return frozenset(), {}
        current = await _lock(conn, [w.execution_id for w in updates])
        before = {e: (row[3], row[4]) for e, row in current.items()}
        held = [w for w in updates if current.get(w.execution_id, ())[:3] == _expected(w)]
        if not held:
            return frozenset(), before
        rows = await conn.fetch(
            Q.APPLY_WRITES,
            [w.execution_id for w in held],
            [w.fence.owner_id for w in held],
            [w.fence.epoch for w in held],
            [w.version for w in held],
            [w.state is not None for w in held],
            *R.state_columns([w.state for w in held]),
            [_next_intent_seq(w) for w in held],
            [w.release for w in held],
            [R.opt_num(w.exposure) for w in held],
        )
        return frozenset(r["execution_id"] for r in rows), before

    async def _insert_intents(
        self, conn: asyncpg.Connection, intents: Sequence[OrderIntent], *, all_columns: bool = False
    ) -> None:
        """Insert intents (`all_columns`: protective ones, migration 005's columns too); a
        replay must equal what is stored, every column compared."""
        if not intents:
            return
        if all_columns:
            rows = await conn.fetch(
                P.INSERT_PROTECTIVE_INTENTS, *P.protective_intent_params(intents)
            )
        else:
            rows = await conn.fetch(Q.INSERT_INTENTS, *R.intent_columns(intents))
        inserted = {r["client_order_id"] for r in rows}
        seen = [i for i in intents if i.client_order_id not in inserted]
        if not seen:
            return
        rows = await conn.fetch(Q.GET_ORDERS_BY_CLIENT_ID, [i.client_order_id for i in seen])
        stored = {r["client_order_id"]: R.order_from_row(r).intent for r in rows}
        conflicts = [i.client_order_id for i in seen if stored.get(i.client_order_id) != i]
        if conflicts:
            raise IntentConflictError(
                f"order intent(s) {', '.join(conflicts[:5])} already recorded with different "
                f"content ({len(conflicts)} in all); nothing of the commit was written"
            )

    async def _apply_order_updates(
        self, conn: asyncpg.Connection, live: Sequence[ExecutionWrite]
    ) -> None:
        updates = [(w.execution_id, u) for w in live for u in merge_updates(w.order_updates)]
        if updates:
            await conn.execute(
                Q.APPLY_ORDER_UPDATES,
                *R.update_columns(updates),
                _TERMINAL,
                [a for a, _ in _TERMINAL_MOVES],
                [b for _, b in _TERMINAL_MOVES],
            )

    async def _insert_fills(self, conn: asyncpg.Connection, live: Sequence[ExecutionWrite]) -> None:
        fills = [(w.execution_id, f) for w in live for f in w.fills]
        if not fills:
            return
        rows = await conn.fetch(Q.INSERT_FILLS, *R.fill_columns(fills))
        inserted = {(r["client_order_id"], r["fill_id"]) for r in rows}
        seen = [
            (e, f) for e, f in fills if (f.fill.client_order_id, f.fill.fill_id) not in inserted
        ]
        if not seen:
            return
        rows = await conn.fetch(
            Q.GET_FILLS_BY_KEY,
            [f.fill.client_order_id for _, f in seen],
            [f.fill.fill_id for _, f in seen],
        )
        stored = {
            (r["client_order_id"], r["fill_id"]): (r["execution_id"], R.fill_from_row(r).fill)
            for r in rows
        }
        for execution_id, record in seen:
            fill = record.fill
            where = f"fill {fill.fill_id} of order {fill.client_order_id}"
            found = stored.get((fill.client_order_id, fill.fill_id))
            if found is None or found[0] != execution_id:
                raise StoreError(
                    f"{where}: no such order of execution {execution_id}; a fill is never "
                    "dropped, so nothing of the commit was written"
                )
            if found[1] != fill:
                raise FillConflictError(
                    f"{where} is already recorded with different content; nothing of the "
                    "commit was written"
                )

    async def _complete_controls(
        self, conn: asyncpg.Connection, live: Sequence[ExecutionWrite]
    ) -> None:
        completions = [c for w in live for c in w.controls]
        if not completions:
            return
        rows = await conn.fetch(Q.COMPLETE_CONTROL_REQUESTS, *R.control_columns(completions))
        missing = {c.request_id for c in completions} - {r["request_id"] for r in rows}
        if missing:
            raise StoreError(
                f"control request(s) {', '.join(sorted(missing))} were never recorded; "
                "nothing of the commit was written"
            )

    async def _insert_history(
        self,
        conn: asyncpg.Connection,
        live: Sequence[ExecutionWrite],
        cursor: tuple[str, int] | None,
        extra: Sequence[OutboxEvent] = (),
    ) -> None:
        risk = [e for w in live for e in w.risk_events]
        snapshots = [s for w in live for s in w.snapshots]
        events = [*(e for w in live for e in w.events), *extra]
        if not risk and not snapshots and not events and cursor is None:
            return
        name, seq = (None, None) if cursor is None else cursor
        await conn.execute(
            Q.INSERT_HISTORY,
            *R.risk_event_columns(risk),
            *R.snapshot_columns(snapshots),
            *R.outbox_columns(events),
            name,
            seq,
        )

    async def _insert_decisions(
        self, conn: asyncpg.Connection, live: Sequence[ExecutionWrite]
    ) -> None:
        rows = [(w.execution_id, d) for w in live for d in w.decisions]
        if rows:
            await conn.execute(DECISIONS_BATCH_INSERT_SQL, *batch_decision_params(rows))

    async def record_marks(self, writes: Sequence[MarkWrite]) -> set[uuid.UUID]:
        """Valuation-only writes (state_version unchanged) in one transaction: the rows are
        locked in execution_id order, and each mark applies, with its snapshot, only where
        owner, epoch and `state_version == version` hold; returns the ids NOT written (fence
        lost, a newer version, or unknown). BEGIN, lock, one write statement, COMMIT."""
        if not writes:
            return set()
        _check_marks(writes)
        async with self._tx("record_marks") as conn:
            current = await _lock(conn, [w.execution_id for w in writes])
            held = [
                w
                for w in writes
                if current.get(w.execution_id, ())[:3]
                == (w.fence.owner_id, w.fence.epoch, w.version)
            ]
            if not held:
                return {w.execution_id for w in writes}
            snapshots = [w.snapshot for w in held if w.snapshot is not None]
            await _upsert_protection(
                conn, [(w.execution_id, w.protection) for w in held if w.protection is not None]
            )
            rows = await conn.fetch(
                Q.RECORD_MARKS,
                [w.execution_id for w in held],
                [w.fence.owner_id for w in held],
                [w.fence.epoch for w in held],
                [w.version for w in held],
                [R.num(w.unrealized_pnl) for w in held],
                [R.num(w.total_pnl) for w in held],
                *R.snapshot_columns(snapshots),
                [R.opt_num(w.exposure) for w in held],
                [
                    None
                    if w.marks is None
                    else jsoncodec.dumps({s: money_str(R.num(p)) for s, p in w.marks.items()})
                    for w in held
                ],
            )
            before = {e: (row[3], row[4]) for e, row in current.items()}
            await move_ledger(conn, _ledger_moves(held, before), None)
        return {w.execution_id for w in writes} - {r["execution_id"] for r in rows}

    async def load_protection(
        self, execution_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, JsonObject]:
        """The stored protection state of those executions that have one (one query)."""
        wanted = list(dict.fromkeys(execution_ids))
        if not wanted:
            return {}
        async with self._conn("load_protection") as conn:
            rows = await conn.fetch(P.GET_PROTECTION_STATES, wanted)
        return {r["execution_id"]: P.protection_state_from_row(r).state for r in rows}


def _protective(intent: OrderIntent) -> bool:
    """An intent with a column only migration 005 has (a stop, a trail, a group, ...)."""
    return bool(
        intent.stop_price is not None
        or intent.trail is not None
        or intent.parent_client_order_id
        or intent.oco_group_id
        or intent.reduce_only
    )


async def _upsert_protection(
    conn: asyncpg.Connection, items: Sequence[tuple[uuid.UUID, ProtectionWrite]]
) -> None:
    """The protection states of writes already fenced in this transaction (one upsert; the
    statement's own fence is left open: NULL owner)."""
    if not items:
        return
    items = sorted(items, key=lambda item: item[0])
    await conn.execute(
        P.UPSERT_PROTECTION_STATES,
        [eid for eid, _ in items],
        [jsoncodec.dumps(w.state) for _, w in items],
        [STATE_VERSION for _ in items],
        [w.unprotected for _, w in items],
        [None for _ in items],
        [None for _ in items],
    )


async def _lock(
    conn: asyncpg.Connection, execution_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[Any, ...]]:
    """Lock the executions in id order; their (owner, epoch, state_version, user,
    ledger exposure) as locked."""
    rows = await conn.fetch(Q.LOCK_EXECUTIONS, execution_ids)
    return {
        r["execution_id"]: (
            r["owner_id"],
            r["lease_epoch"],
            r["state_version"],
            r["user_id"],
            r["ledger_exposure"],
        )
        for r in rows
    }


def _ledger_moves(
    live: Sequence[ExecutionWrite | MarkWrite],
    before: dict[uuid.UUID, tuple[uuid.UUID, Decimal]],
) -> dict[LedgerScope, Decimal]:
    """How much each ledger total moves: every applied write's exposure replaces what its
    execution held (0 for a creation)."""
    moves: dict[LedgerScope, Decimal] = {}
    for write in live:
        if write.exposure is None:
            continue
        create = getattr(write, "create", None)
        if create is not None:
            user, held = create.user_id, Decimal(0)
        else:
            user, held = before[write.execution_id]
        delta = write.exposure - held
        if delta:
            for scope in (FLEET, ("user", str(user))):
                moves[scope] = moves.get(scope, Decimal(0)) + delta
    return moves


async def move_ledger(
    conn: asyncpg.Connection, moves: dict[LedgerScope, Decimal], caps: LedgerCaps | None
) -> dict[LedgerScope, Decimal]:
    """Move the totals in one statement (rows in (scope, key) order, the lock order) and,
    with `caps` (the commit records new buys), refuse the transaction when a total ends
    above its cap: raising rolls every write of the commit back."""
    if not moves:
        return {}
    ordered = sorted(moves.items())
    rows = await conn.fetch(
        Q.MOVE_LEDGER,
        [scope for (scope, _), _ in ordered],
        [key for (_, key), _ in ordered],
        [R.num(delta) for _, delta in ordered],
    )
    after = {(r["scope"], r["scope_key"]): r["exposure"] for r in rows}
    if caps is not None:
        for scope, total in sorted(after.items()):
            cap = caps.fleet if scope == FLEET else caps.user
            if cap is not None and total > cap:
                raise LedgerRefusedError(scope, total - moves[scope], cap)
    return after


def _expected(write: ExecutionWrite) -> tuple[str, int, int]:
    """What the locked row must show for `write` to apply: its fence, and the version the
    writer saw (one before the one it writes)."""
    return (write.fence.owner_id, write.fence.epoch, write.version - 1)


def _check_marks(writes: Collection[MarkWrite]) -> None:
    seen: set[uuid.UUID] = set()
    for write in writes:
        if write.execution_id in seen:
            raise ValueError(f"two mark writes for execution {write.execution_id}")
        seen.add(write.execution_id)
        if write.snapshot is not None and write.snapshot.execution_id != write.execution_id:
            raise ValueError(
                f"snapshot {write.snapshot.snapshot_id} belongs to "
                f"{write.snapshot.execution_id}, not to the mark of {write.execution_id}"
            )


def _fill_key(record: FillRecord) -> tuple[str, str]:
    return record.fill.client_order_id, record.fill.fill_id


def _first_intent_seq(write: ExecutionWrite) -> int:
    """A new execution's next_intent_seq: as given, else past its intents (from 1)."""
    given = _next_intent_seq(write)
    return 1 if given is None else given


def _next_intent_seq(write: ExecutionWrite) -> int | None:
    """The next_intent_seq a write stores: as given, else just past its intents, else None
    (kept). The SQL never lowers it, so an intent's seq is never handed out again."""
    if write.next_intent_seq is not None:
        return write.next_intent_seq
    if write.intents:
        return max(i.intent_seq for i in write.intents) + 1
    return None
