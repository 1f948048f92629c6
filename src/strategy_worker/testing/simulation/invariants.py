"""The rules a simulation checks after every step, each cheap enough to run that often
(incremental: only what changed since the last check is looked at).

- intent before action: every order the OMS ever received was recorded first, identically;
- every order that reaches the OMS passes the gate at that moment (`on_receipt`): no buy
  unless the execution is active, trading ACTIVE, not stopping and the symbol not blocked;
  no sell (but the protective ones, bounded by the book) beyond what the worker holds net
  of its other sells in flight; and the OMS never holds a short position (long-only,
  never an oversell, however protective legs, exits and closes race);
- protective orders (issue 16): at most one protective exit live at the OMS per position
  (an emulated exit, or one native OCO group, never both, never two); protective orders
  never sell more than was bought; an open position the worker drives is unprotected only
  while a failed exit backs off (at most 60 s), and its next exit leaves within
  `UNPROTECTED_BOUND_S` after that;
- `stopped` (or `error`) implies flat at the OMS, with nothing working there;
- no write by a worker that does not hold the lease;
- stored positions and P&L equal a replay of the recorded fills, to the cent;
- a worker's runner equals what the store holds (memory is never ahead of the store);
- every published event was committed first (the outbox), and at the end every committed
  event was published, once after dropping repeats by event id, in commit order per key;
- a strategy's own rules: no buy of a symbol gated by an entry rule before a fired entry
  decision for it that nothing blocked (committed at or before the buy); no buy of a
  symbol an exit rule closed (an `EXIT` order that filled or works) in a strategy without
  entry rules; no decision of an execution without rules;
- the risk ledger: every commit that recorded new buys carried the caps and left every total
  within them; every total is the sum of what its executions hold, and what an execution
  holds is its exposure recomputed from its stored positions and orders.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, Side
from strategy_worker.domain.positions import Portfolio
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.store import FLEET, ExecutionState, ExecutionStatus, FillRecord, LedgerCaps
from strategy_worker.testing.memory_store import MemoryDatabase
from strategy_worker.testing.ports import MemoryPublisher
from strategy_worker.testing.venue import SimOms

ENDED = (ExecutionStatus.STOPPED, ExecutionStatus.ERROR)
UNPROTECTED_BOUND_S = 30.0
"""How long an open position of a driven execution may be without live protection: the
documented state is a failed exit's back-off (at most 60 s, `retry_max_s`), after which
the next exit must leave within this bound; any other unprotected state (a position the
book has not been told of yet) must end within it too."""


class InvariantViolation(AssertionError):
    """A rule the runtime promised was broken; the message says which and where."""


@dataclass
class Invariants:
    db: MemoryDatabase
    oms: SimOms
    events: MemoryPublisher
    violations: list[str] = field(default_factory=list)
    _orders_seen: int = 0
    _writes_seen: int = 0
    _published_seen: int = 0
    _versions: dict[uuid.UUID, int] = field(default_factory=dict)
    _unprotected_since: dict[tuple[uuid.UUID, str], float] = field(default_factory=dict)
    now: Any = None
    """The clock (a callable giving epoch seconds), for the unprotected bound."""
    _buy_commits: int = 0
    _orders_judged: dict[uuid.UUID, int] = field(default_factory=dict)
    _decisions_seen: int = 0
    _fired: dict[tuple[uuid.UUID, str], list[Any]] = field(default_factory=dict)
    _decided: set[uuid.UUID] = field(default_factory=set)
    _ruled: set[uuid.UUID] = field(default_factory=set)
    _known: set[uuid.UUID] = field(default_factory=set)
    caps: LedgerCaps | None = None
    checks: int = 0
    protective_exits: int = 0
    """Protective orders the OMS received (the simulation reports them)."""

    # ------------------------------------------------------------------ at the OMS

    def on_receipt(self, intent: OrderIntent) -> None:
        """Called by the venue the moment an order arrives (before it is processed)."""
        ex = self.db.executions.get(intent.execution_id)
        if ex is None:
            self.violations.append(f"{intent.client_order_id}: execution never recorded")
            return
        if intent.client_order_id not in self.db.orders:
            self.violations.append(f"{intent.client_order_id}: reached the OMS unrecorded")
        record = ex.record
        state = record.state
        if intent.side is Side.BUY:
            runtime = state.positions.get("runtime") or {}
            risk = state.positions.get("risk") or {}
            why = None
            if state.status is not ExecutionStatus.ACTIVE:
                why = f"status {state.status}"
            elif runtime.get("stop"):
                why = "stopping"
            elif state.trading_state.value != "ACTIVE":
                why = f"trading {state.trading_state}"
            elif intent.symbol in (risk.get("stopped_out") or {}):
                why = "symbol stopped out"
            if why:
                self.violations.append(f"BUY {intent.client_order_id} reached the OMS: {why}")
            return
        if intent.purpose.is_protective:
            self.protective_exits += 1
            return  # bounded by the book; reduce-only, checked as "never short" below
        stored = (state.positions.get("positions") or {}).get(intent.symbol) or {}
        held = Decimal(str(stored.get("quantity", "0")))
        selling = sum(
            (
                o.request.quantity - o.filled_quantity
                for o in self.oms.venue.orders(execution_id=intent.execution_id)
                if o.request.side is Side.SELL
                and o.request.symbol == intent.symbol
                and not o.status.is_terminal
                and not OrderPurpose(o.request.purpose or "INITIAL").is_protective
                and o.client_order_id != intent.client_order_id
            ),
            ZERO,
        )
        if intent.quantity + selling > held:
            self.violations.append(
                f"SELL {intent.client_order_id}: {intent.quantity} + {selling} in flight "
                f"> {held} held by the worker"
            )

    # ------------------------------------------------------------------ after every step

    def check(self, books: Iterable[ExecutionBook]) -> None:
        self.checks += 1
        self._intent_before_action()
        self._fenced_writes()
        self._ended_flat()
        self._replays()
        books = list(books)
        self._memory_is_the_store(books)
        self._published_were_committed()
        self._signals()
        self._never_short()
        self._one_protective_exit()
        self._protected(books)
        self._ledger()
        if self.violations:
            raise InvariantViolation("; ".join(self.violations[:5]))

    def _intent_before_action(self) -> None:
        log = self.oms.venue.order_log
        for coid in log[self._orders_seen :]:
            stored = self.db.orders.get(coid)
            sent = self.oms.venue.get(client_order_id=coid)
            assert sent is not None
            req = sent.request
            if stored is None:
                self.violations.append(f"{coid} at the OMS without a recorded intent")
            elif (stored.symbol, stored.side, stored.quantity) != (
                req.symbol,
                req.side,
                req.quantity,
            ):
                self.violations.append(f"{coid} at the OMS differs from its intent")
        if len(set(log)) != len(log):
            self.violations.append("a client order id reached the OMS twice")
        self._orders_seen = len(log)

    def _fenced_writes(self) -> None:
        writes = self.db.writes
        for w in writes[self._writes_seen :]:
            if (w.owner_id, w.epoch) != (w.holder, w.holder_epoch):
                self.violations.append(
                    f"write for {w.execution_id} by {w.owner_id}@{w.epoch} while "
                    f"{w.holder}@{w.holder_epoch} held the lease"
                )
        self._writes_seen = len(writes)

    def _ended_flat(self) -> None:
        venue = self.oms.venue
        for eid, ex in self.db.executions.items():
            if ex.record.state.status not in ENDED:
                continue
            held = {s: q for s, q in venue.execution_book(eid).net_positions().items() if q}
            working = [o for o in venue.orders(execution_id=eid) if not o.status.is_terminal]
            if held or working:
                self.violations.append(
                    f"{eid} is {ex.record.state.status} but the OMS holds {held} "
                    f"with {len(working)} order(s) working"
                )

    def _replays(self) -> None:
        for eid, ex in self.db.executions.items():
            version = ex.record.version
            if self._versions.get(eid) == version:
                continue
            self._versions[eid] = version
            problem = replay_problem(ex.record.initial_capital, ex.fills, ex.record.state)
            if problem:
                self.violations.append(f"{eid} v{version}: {problem}")
            recomputed = self.db.recomputed_exposure(eid)
            if recomputed != ex.record.ledger_exposure:
                self.violations.append(
                    f"{eid} v{version}: ledger holds {ex.record.ledger_exposure}, its stored "
                    f"positions and orders give {recomputed}"
                )

    def _memory_is_the_store(self, books: Iterable[ExecutionBook]) -> None:
        for book in books:
            for runner in book:
                if runner.dirty:
                    continue
                ex = self.db.executions.get(runner.execution_id)
                if ex is None:
                    continue
                rec = ex.record
                if rec.owner_id != runner.fence.owner_id or rec.lease_epoch != runner.fence.epoch:
                    continue  # lost the lease, and will learn so at its next write
                if rec.version != runner.model.version:
                    self.violations.append(
                        f"{runner.execution_id}: runner at v{runner.model.version}, "
                        f"store at v{rec.version}"
                    )
                    continue
                pf = runner.model.portfolio
                stored = rec.state
                if pf.cash != stored.cash or pf.realized_pnl != stored.realized_pnl:
                    self.violations.append(f"{runner.execution_id}: memory differs from store")

    def _never_short(self) -> None:
        for eid in self.db.executions:
            book = self.oms.venue.execution_book(eid)
            short = {s: q for s, q in book.net_positions().items() if q < 0}
            if short:
                self.violations.append(f"{eid} is short at the OMS: {short}")

    def _one_protective_exit(self) -> None:
        """Per execution and symbol at the OMS: at most one live protective exit (an
        emulated exit, or one OCO group), and protective fills never above what was bought."""
        for eid in self.db.executions:
            units: dict[str, set[str]] = {}
            bought: dict[str, Decimal] = {}
            sold: dict[str, Decimal] = {}
            for order in self.oms.venue.orders(execution_id=eid):
                req = order.request
                if req.side is Side.BUY:
                    bought[req.symbol] = bought.get(req.symbol, ZERO) + order.filled_quantity
                    continue
                if not OrderPurpose(req.purpose or "INITIAL").is_protective:
                    continue
                sold[req.symbol] = sold.get(req.symbol, ZERO) + order.filled_quantity
                if not order.status.is_terminal:
                    units.setdefault(req.symbol, set()).add(req.oco_group_id or req.client_order_id)
            for symbol, live in units.items():
                if len(live) > 1:
                    self.violations.append(
                        f"{eid} {symbol}: {len(live)} protective exits live at the OMS: "
                        f"{sorted(live)}"
                    )
            for symbol, quantity in sold.items():
                if quantity > bought.get(symbol, ZERO):
                    self.violations.append(
                        f"{eid} {symbol}: protective orders sold {quantity} of "
                        f"{bought.get(symbol, ZERO)} bought"
                    )

    def _protected(self, books: Iterable[ExecutionBook]) -> None:
        """No open position of a driven execution without protection beyond the bound:
        only while a failed exit backs off (at most 60 s), and its next exit leaves within
        UNPROTECTED_BOUND_S of the back-off's end."""
        if self.now is None:
            return
        now = float(self.now())
        seen: set[tuple[uuid.UUID, str]] = set()
        for book in books:
            for runner in book:
                protection = runner.model.protection
                if runner.dirty or protection is None or not runner.running:
                    continue
                ex = self.db.executions.get(runner.execution_id)
                if ex is None or not _holds_lease(ex.record, runner.fence, now):
                    continue  # not driven any more (the successor is checked instead)
                for symbol in protection.unprotected(runner.held()):
                    guard = protection.guard(symbol)
                    retry_at = None if guard is None else guard.retry_at
                    if retry_at is not None:
                        due = retry_at.timestamp()
                        if due - now > 60.0 + 1.0 or now - due > UNPROTECTED_BOUND_S:
                            self.violations.append(
                                f"{runner.execution_id} {symbol}: next exit due at {due:.0f}, "
                                f"now {now:.0f} (back-off over 60 s or exit overdue)"
                            )
                        continue
                    key = (runner.execution_id, symbol)
                    seen.add(key)
                    since = self._unprotected_since.setdefault(key, now)
                    if now - since > UNPROTECTED_BOUND_S:
                        self.violations.append(
                            f"{runner.execution_id} {symbol}: unprotected for "
                            f"{now - since:.0f} s (> {UNPROTECTED_BOUND_S:.0f} s)"
                        )
        for key in set(self._unprotected_since) - seen:
            del self._unprotected_since[key]

    def _published_were_committed(self) -> None:
        committed = self.db.outbox_ids
        published = self.events.published
        for item in published[self._published_seen :]:
            if item.event.event_id not in committed:
                self.violations.append(f"event {item.event.event_id} published, never committed")
        self._published_seen = len(published)

    def _signals(self) -> None:
        # Incremental: only the decisions and orders recorded since the last check.
        decisions = self.db.decisions
        for (eid, symbol, *_), decision in itertools.islice(
            decisions.items(), self._decisions_seen, None
        ):
            opened = decision.action is not None and decision.action.value == "open"
            if opened and decision.gate is None:
                self._fired.setdefault((eid, symbol), []).append(decision.decided_at)
            self._decided.add(eid)
        self._decisions_seen = len(decisions)
        for eid, ex in self.db.executions.items():
            if eid not in self._known:
                self._known.add(eid)
                config = ex.record.config
                if config.get("entry_rules") or config.get("exit_rules"):
                    self._ruled.add(eid)
            judged = self._orders_judged.get(eid, 0)
            if judged == len(ex.order_ids):
                continue
            if eid in self._ruled:
                entry = bool(ex.record.config.get("entry_rules"))
                self._judge_buys(eid, ex.order_ids, judged, entry)
            self._orders_judged[eid] = len(ex.order_ids)
        stray = self._decided - self._ruled
        if stray:
            self.violations.append(f"signal decisions of executions without rules: {stray}")

    def _judge_buys(self, eid: uuid.UUID, order_ids: list[str], judged: int, entry: bool) -> None:
        rows = [self.db.orders[c] for c in order_ids]
        for order in rows[judged:]:
            coid = order.client_order_id
            if order.side is not Side.BUY:
                continue
            if entry:
                times = self._fired.get((eid, order.symbol), [])
                if not any(at <= order.created_at for at in times):
                    self.violations.append(
                        f"BUY {coid} of {order.symbol} ({order.purpose}) with no entry "
                        "signal fired before it"
                    )
            elif any(
                o.symbol == order.symbol
                and o.purpose.value == "EXIT"
                and (o.filled_quantity > 0 or not o.status.is_terminal)
                and o.intent_seq < order.intent_seq
                for o in rows
            ):
                self.violations.append(f"BUY {coid} of {order.symbol} after an exit rule closed it")

    def _ledger(self) -> None:
        for caps, after in self.db.buy_commits[self._buy_commits :]:
            if caps is None or caps != self.caps:
                self.violations.append(f"a commit with new buys carried caps {caps}")
                continue
            for scope, total in after.items():
                cap = caps.fleet if scope == FLEET else caps.user
                if cap is not None and total > cap:
                    self.violations.append(f"ledger {scope} at {total} > cap {cap} after buys")
        self._buy_commits = len(self.db.buy_commits)
        sums: dict[tuple[str, str], Decimal] = {FLEET: ZERO}
        for ex in self.db.executions.values():
            rec = ex.record
            for scope in (FLEET, ("user", str(rec.user_id))):
                sums[scope] = sums.get(scope, ZERO) + rec.ledger_exposure
        for scope in set(sums) | set(self.db.ledger):
            if sums.get(scope, ZERO) != self.db.ledger.get(scope, ZERO):
                self.violations.append(
                    f"ledger {scope} holds {self.db.ledger.get(scope)}, its executions "
                    f"{sums.get(scope)}"
                )

    # ------------------------------------------------------------------ at the end

    def final(self, published_ids_in_order: list[uuid.UUID]) -> None:
        """Every committed event published once (after dedup), in commit order per key."""
        first: dict[uuid.UUID, int] = {}
        for i, event_id in enumerate(published_ids_in_order):
            first.setdefault(event_id, i)
        rows = sorted(self.db.outbox.items())
        missing = [r.event.event_id for _, r in rows if r.event.event_id not in first]
        if missing:
            self.violations.append(f"{len(missing)} committed event(s) never published")
        last_by_key: dict[str, int] = {}
        for _, row in rows:
            at = first.get(row.event.event_id)
            if at is None:
                continue
            key = row.event.key
            if at < last_by_key.get(key, -1):
                self.violations.append(f"events of key {key} published out of commit order")
                break
            last_by_key[key] = at
        if self.violations:
            raise InvariantViolation("; ".join(self.violations[:5]))


def _holds_lease(record: Any, fence: Any, now: float) -> bool:
    expires = record.lease_expires_at
    return bool(
        record.owner_id == fence.owner_id
        and record.lease_epoch == fence.epoch
        and (expires is None or expires.timestamp() > now)
    )


def replay_problem(capital: Decimal, fills: Iterable[FillRecord], state: ExecutionState) -> str:
    """What a replay of the recorded fills disagrees with in the stored state ('' if none)."""
    book = Portfolio(capital)
    for record in fills:
        book.apply_fill(record.fill)
    stored_positions: Mapping[str, Any] = (state.positions or {}).get("positions") or {}
    for name, ours, theirs in (
        ("cash", book.cash, state.cash),
        ("realized", book.realized_pnl, state.realized_pnl),
        ("fees", book.fees, state.fees),
        ("trades", book.total_trades, state.total_trades),
        ("winning", book.winning_trades, state.winning_trades),
        ("losing", book.losing_trades, state.losing_trades),
    ):
        if ours != theirs:
            return f"{name} {theirs} stored, {ours} by replay"
    if set(stored_positions) != set(book.positions):
        return f"positions {sorted(stored_positions)} stored, {sorted(book.positions)} by replay"
    for symbol, pos in book.positions.items():
        row = stored_positions[symbol]
        quantity, cost = Decimal(str(row["quantity"])), Decimal(str(row["cost_basis"]))
        if (quantity, cost) != (pos.quantity, pos.cost_basis):
            return f"{symbol} position differs from the replay"
    return ""
