"""Protective orders in the runtime: each execution's `ProtectionBook`, wired into the one
decide-then-commit path (issue 16; the rules are in docs/protection.md).

The book is part of the committed model (`ExecutionModel.protection`): a step copies it on
first use (`Step.protection`), feeds it the step's facts and lets it decide (`protect`, run
by `decide.settle` after every step), and the commit writes its intents (recorded before
they are sent) and its state (`ExecutionWrite.protection`, `execution_protection`) in the
same transaction. Only after that commit does the engine place what it decided: native OCO
legs as one atomic group (`split_groups`, `send_group`), emulated exits like any order,
cancels after the commit.

- The facts, in every step: the OMS's word on the book's orders (the step's reports and
  views, `Step.observed`), then every position as the fills left it with the other orders
  in flight (`on_position`), then, in a monitor step, the fresh marks (`watch`).
- The price path is the stop-loss watch's (`Monitor.on_prices` / `cycle`): `observe` checks
  every mark of a held symbol against the book's levels before the monitor decides who acts.
  A mark that would trigger a leg makes the execution act (its monitor step latches the
  trigger and releases the exit in one commit); a quiet mark only ratchets the trailing
  watermark of the committed book in place (an observation, like the marks themselves,
  written with the next commit or the cycle's quiet write; `mark_write`). While a step of
  the execution is in flight (its lock held) nothing is changed in place: the mark makes it
  act instead, so a step's copy never overwrites a ratchet it did not see.
- Time-based steps (a native leg's grace, a failed exit's back-off) get a timer from the
  engine (`next_wake`) and the monitor cycle as a safety net (`due`).
- Reconciliation: the OMS's view of every owned order reaches the book like a report;
  recorded protective intents the OMS never saw are sent again without the risk gate, or
  dropped locally when the book no longer wants them (`resubmit`); cancels the book asked
  for are sent again while the OMS still shows the order live (`reconciled`).
- The stop-loss: the book owns the STOP_LOSS leg (its exit and its CRITICAL
  `STOP_LOSS_TRIGGERED` event, plus the spec's `stop_loss_triggered` message); the
  `StopLossMonitor` keeps the warning zone and the re-entry block, which every protective
  trigger sets (`owns_stop_loss`, `_block`).

Protective intents never pass the RiskManager: they only reduce risk, are reduce-only at the
OMS, and the book bounds them by what is held (`on_position(selling=...)`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from strategy_worker import messages as msg
from strategy_worker.domain.money import ZERO, quantize_level
from strategy_worker.domain.order_state import OrderState
from strategy_worker.domain.orders import (
    ExecutionReport,
    OmsCapabilities,
    OmsOrder,
    OrderIntent,
    OrderStatus,
    Side,
)
from strategy_worker.domain.protection import (
    Leg,
    ProtectionBook,
    ProtectionSpec,
    ProtectionTriggered,
)
from strategy_worker.domain.protection import rules as prules
from strategy_worker.domain.protection.state import Guard
from strategy_worker.errors import DomainError, OmsError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import OmsGateway
from strategy_worker.runtime.facts import ExecutionInfo
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.store import JsonObject, ProtectionWrite

if TYPE_CHECKING:
    from strategy_worker.runtime.engine import Engine
    from strategy_worker.runtime.step import Step

_log = get_logger(__name__)

_WAKE_SLACK_S = 0.01
"""A timer wakes this much after its deadline (the step's clock must have passed it)."""


class ProtectionDesk:
    """Worker-wide: what the OMS holds natively, new and restored books, the gauge."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics
        self.capabilities = OmsCapabilities.baseline()
        """The OMS's last answer to GetCapabilities (baseline until it answers: emulated)."""
        self.known = False
        self._unprotected: dict[uuid.UUID, int] = {}

    async def refresh(self, oms: OmsGateway, runners: Iterable[ExecutionRunner] = ()) -> bool:
        """Ask the OMS what it holds natively; on a change, tell every book. True when the
        answer changed. Raises what the OMS raises (the caller's loop retries)."""
        caps = await oms.capabilities()
        changed = caps != self.capabilities
        self.capabilities = caps
        self.known = True
        if changed:
            _log.info(
                "oms capabilities",
                order_types=sorted(t.value for t in caps.order_types),
                oco_groups=caps.oco_groups,
                reduce_only=caps.reduce_only,
                order_groups=caps.order_groups,
            )
            for runner in runners:
                book = runner.model.protection
                if book is not None:
                    book.set_capabilities(caps)
        return changed

    def new_book(self, info: ExecutionInfo) -> ProtectionBook | None:
        """A fresh book for an execution whose limits configure protection (else None)."""
        if info.protection is None:
            return None
        return ProtectionBook(info.execution_id, info.protection, capabilities=self.capabilities)

    def restore(self, info: ExecutionInfo, state: JsonObject | None) -> ProtectionBook | None:
        """The book as committed (`from_json`); the reconciliation that follows every
        restore re-arms it. A state this version cannot read is logged and replaced by a
        fresh book, which protects the positions again from the next step."""
        if state is None:
            return self.new_book(info)
        spec = info.protection or ProtectionSpec()
        try:
            return ProtectionBook.from_json(
                state,
                execution_id=info.execution_id,
                spec=spec,
                capabilities=self.capabilities,
            )
        except DomainError as exc:
            _log.error(
                "protection state unreadable; protection starts afresh",
                execution_id=str(info.execution_id),
                error=str(exc)[:300],
            )
            return self.new_book(info)

    def note(self, execution_id: uuid.UUID, unprotected: int) -> None:
        """One execution's unprotected positions as of its last write (the gauge's sum)."""
        if unprotected:
            self._unprotected[execution_id] = unprotected
        else:
            self._unprotected.pop(execution_id, None)
        self._metrics.positions_unprotected.set(sum(self._unprotected.values()))

    def recount(self, runners: Iterable[ExecutionRunner]) -> int:
        """The gauge from the books of the executions driven now (the monitor cycle)."""
        counts: dict[uuid.UUID, int] = {}
        for runner in runners:
            n = unprotected(runner)
            if n:
                counts[runner.execution_id] = n
        self._unprotected = counts
        total = sum(counts.values())
        self._metrics.positions_unprotected.set(total)
        return total


def owns_stop_loss(info: ExecutionInfo) -> bool:
    """The book holds the STOP_LOSS leg: the StopLossMonitor only warns and blocks."""
    spec = info.protection
    return spec is not None and spec.stop_loss_pct is not None


def unprotected(runner: ExecutionRunner) -> int:
    book = runner.model.protection
    if book is None:
        return 0
    return len(book.unprotected(runner.held()))


# ---------------------------------------------------------------------- in a step


def protect(step: Step) -> None:
    """The book's facts of this step, then its decision, recorded in the step (see the
    module docstring). Run last by `decide.settle`, so it sees every order the step added."""
    model = step.model
    if model.protection is None and (
        step.info.protection is None or not (model.portfolio.positions or step.observed)
    ):
        return
    book = step.protection
    if book is None:
        return
    at = step.now
    told = _positions_told(book)
    for item in step.observed:
        if isinstance(item, ExecutionReport):
            book.on_report(item, at=at)
        else:
            book.on_oms_order(item, at=at)
    tell_positions(step, book)
    committed = step.runner.model.protection
    if book.symbols and (committed is None or set(book.symbols) - set(committed.symbols)):
        step.touched = True  # a position the stored book does not guard yet: write it now
    decided = book.decide(at=at, next_seq=model.next_seq)
    if decided.intents:
        step.add_numbered(decided.intents)
    for cid in decided.cancels:
        if cid not in step.cancels:
            step.cancels.append(cid)
    for event in decided.events:
        step.risk(event.risk_event)
        if isinstance(event, ProtectionTriggered):
            _triggered(step, event, told.get(event.symbol))


def tell_positions(step: Step, book: ProtectionBook) -> None:
    """`on_position` for every symbol held, guarded or with orders in flight, with the
    quantities the execution's other live orders will still sell and buy."""
    model = step.model
    selling: dict[str, Decimal] = {}
    buying: dict[str, Decimal] = {}
    for order in model.orders.values():
        if not order.is_live or book.owns(order.client_order_id):
            continue
        side = selling if order.intent.side is Side.SELL else buying
        symbol = order.intent.symbol
        side[symbol] = side.get(symbol, ZERO) + order.remaining_quantity
    positions = model.portfolio.positions
    for symbol in sorted({*book.symbols, *positions, *selling, *buying}):
        pos = positions.get(symbol)
        book.on_position(
            symbol,
            pos.quantity if pos is not None else ZERO,
            pos.cost_basis if pos is not None else ZERO,
            selling=selling.get(symbol, ZERO),
            buying=buying.get(symbol, ZERO),
        )


def watch(step: Step) -> None:
    """The monitor step's marks for the book: every held symbol at its fresh mark (the
    stop-loss's price path), the positions told first (a book restored without a state, or
    just created, learns of them before its first mark). A ratchet the committed book did
    not have yet (its runner was busy when the mark came) makes the step write."""
    model = step.model
    if not model.portfolio.positions or (model.protection is None and step.info.protection is None):
        return
    fresh = step.fresh_marks()
    marks = {s: fresh[s] for s in sorted(model.portfolio.positions) if s in fresh}
    if not marks:
        return
    book = step.protection
    if book is None:
        return
    if any(book.guard(symbol) is None for symbol in marks):
        tell_positions(step, book)
    for symbol, mark in marks.items():
        guard = book.guard(symbol)
        before = None if guard is None else guard.watermark
        book.on_price(symbol, mark, step.now)
        after = book.guard(symbol)
        if after is not None and after.watermark != before:
            step.touched = True


def _positions_told(book: ProtectionBook) -> dict[str, tuple[Decimal, Decimal]]:
    """(quantity, cost basis) of each open position as the book knew it before this step."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for symbol in book.symbols:
        guard = book.guard(symbol)
        if guard is not None and guard.quantity > 0:
            out[symbol] = (guard.quantity, guard.cost_basis)
    return out


def _triggered(
    step: Step, event: ProtectionTriggered, told: tuple[Decimal, Decimal] | None
) -> None:
    """A leg triggered: the re-entry block (as a stop-out's), the rest of any buy of the
    symbol still working cancelled (the position is being exited, not grown), and for the
    stop-loss the spec's `stop_loss_triggered` event: the position that triggered, as held
    now or, when the OMS's own stop already sold it in this step, as the book knew it."""
    _block(step, event.symbol, event.level)
    for order in list(step.model.orders.values()):
        intent = order.intent
        if order.is_live and intent.side is Side.BUY and intent.symbol == event.symbol:
            live = step.order(order.client_order_id)
            if live is not None and not live.cancel_requested and live.request_cancel():
                step.cancels.append(live.client_order_id)
    if event.leg is not Leg.STOP_LOSS:
        return
    pos = step.model.portfolio.positions.get(event.symbol)
    if pos is not None:
        quantity, cost = pos.quantity, pos.cost_basis
    elif told is not None:
        quantity, cost = told
    else:
        return
    step.emit(
        msg.stop_loss_triggered(
            step.runner.context,
            at=step.now,
            symbol=event.symbol,
            quantity=quantity,
            average_cost=quantize_level(cost / quantity),
            stop_price=event.level,
            price=event.mark,
            unrealized_pnl=quantity * event.mark - cost,
        )
    )


def _block(step: Step, symbol: str, level: Decimal) -> None:
    """No buy of the symbol until its mark recovers above level x (1 + buffer) and the
    position is closed (`StopLossMonitor`'s rule; it lifts the block itself)."""
    stops = step.model.risk.stops
    if symbol in stops.stopped_out:
        return
    stops.stopped_out[symbol] = quantize_level(level * (1 + stops.buffer))
    step.touched = True


def resubmit(step: Step, order: OrderState) -> None:
    """A recorded protective order the OMS never saw: sent again as recorded (never
    through the risk gate), unless the book no longer wants it (it asked for its cancel,
    or does not own it): then it is cancelled here and the book told."""
    book = step.protection
    cid = order.client_order_id
    if book is not None and book.owns(cid) and not cancel_wanted(book, cid):
        step.resend.append(order.intent)
        return
    step.cancel_locally(order, "not sent: the protection no longer needs it")
    if book is not None:
        book.on_order(cid, OrderStatus.CANCELLED, ZERO, at=step.now, reason="NOT_SENT")


def reconciled(step: Step, views: Sequence[OmsOrder]) -> None:
    """After the OMS's view was applied: send again the cancels the book asked for whose
    orders the OMS still shows live (a cancel lost on the way, or sent before the order)."""
    book = step.model.protection
    if book is None:
        return
    for view in views:
        cid = view.client_order_id
        if view.status.is_terminal or cid in step.cancels or not cancel_wanted(book, cid):
            continue
        step.cancels.append(cid)


def cancel_wanted(book: ProtectionBook, client_order_id: str) -> bool:
    """The book asked the OMS to cancel this order of its own (an exit, or a native leg
    whose group it is cancelling)."""
    for symbol in book.symbols:
        guard = book.guard(symbol)
        if guard is None:
            continue
        if guard.exit is not None and guard.exit.client_order_id == client_order_id:
            return guard.exit.cancelling
        native = guard.native
        if native is not None:
            for leg in native.legs:
                if leg.client_order_id == client_order_id:
                    return native.cancelling or leg.cancelling
    return False


def write_of(step: Step) -> ProtectionWrite | None:
    """The state the step's write carries: the step's copy when it changed anything."""
    book = step.model.protection
    if book is None or not book.dirty:
        return None
    return ProtectionWrite(state=book.to_json(), unprotected=len(book.unprotected(_held(step))))


def _held(step: Step) -> dict[str, Decimal]:
    return {s: p.quantity for s, p in step.model.portfolio.positions.items()}


# ---------------------------------------------------------------------- the price path


def observe(runner: ExecutionRunner, prices: Mapping[str, Decimal], at: datetime) -> bool:
    """New marks for a runner's book (see the module docstring): True when they need the
    monitor step (a leg would trigger, a ratchet while a step is in flight, a held symbol
    the book was never told about, or a time-based step due); else the trailing
    watermarks ratchet in place."""
    book = runner.model.protection
    if book is None or not book.spec.enabled:
        return False
    positions = runner.model.portfolio.positions
    busy = runner.lock.locked()
    act = due(book, at)
    for symbol, mark in prices.items():
        if symbol not in positions or mark <= 0:
            continue
        guard = book.guard(symbol)
        if guard is None or guard.quantity <= 0:
            act = True  # the book has not heard of this position yet
            continue
        if guard.trigger is not None:
            continue  # latched: the exit does not wait for marks
        if would_trigger(book, guard, mark):
            act = True
        elif busy:
            if book.spec.trailing_stop_pct is not None and (
                guard.watermark is None or mark > guard.watermark
            ):
                act = True
        else:
            book.on_price(symbol, mark, at)
    return act


def would_trigger(book: ProtectionBook, guard: Guard, mark: Decimal) -> bool:
    """Whether `on_price(mark)` would latch a trigger (the book's own rule, read-only: the
    watermark is ratcheted to `mark` first, as `on_price` does)."""
    spec = book.spec
    levels = dict(book.levels(guard.symbol))
    if spec.trailing_stop_pct is not None and guard.watermark is not None:
        watermark = prules.ratchet(guard.watermark, mark, Side.SELL)
        if watermark != guard.watermark:
            levels[Leg.TRAILING_STOP] = prules.trail_level(
                watermark, Side.SELL, pct=spec.trailing_stop_pct
            )
    for leg, level in levels.items():
        if leg.is_stop and prules.stop_reached(Side.SELL, level, mark):
            return True
    take = levels.get(Leg.TAKE_PROFIT)
    return take is not None and prules.limit_reached(Side.SELL, take, mark)


def mark_write(runner: ExecutionRunner) -> ProtectionWrite | None:
    """The committed book's state for a quiet write, when quiet marks moved it."""
    book = runner.model.protection
    if book is None or not book.dirty:
        return None
    return ProtectionWrite(state=book.to_json(), unprotected=len(book.unprotected(runner.held())))


# ---------------------------------------------------------------------- time


def deadlines(book: ProtectionBook) -> list[datetime]:
    """When the book's time-based steps fall due: a native leg's grace after the worker's
    marks crossed its level, the next exit after a failed one."""
    out: list[datetime] = []
    grace = book.spec.native_grace_s
    for symbol in book.symbols:
        guard = book.guard(symbol)
        if guard is None or guard.trigger is None:
            continue
        native = guard.native
        trigger = guard.trigger
        if (
            native is not None
            and native.live
            and not native.cancelling
            and not native.executing
            and not trigger.by_oms
        ):
            out.append(trigger.at + timedelta(seconds=grace))
        elif guard.retry_at is not None and (guard.exit is None or not guard.exit.live):
            out.append(guard.retry_at)
    return out


def due(book: ProtectionBook, at: datetime) -> bool:
    return any(deadline <= at for deadline in deadlines(book))


def next_wake(book: ProtectionBook | None, now: datetime) -> float | None:
    """Seconds until the earliest deadline (at least a slack past it), or None."""
    if book is None:
        return None
    pending = deadlines(book)
    if not pending:
        return None
    return max(0.0, (min(pending) - now).total_seconds()) + _WAKE_SLACK_S


# ---------------------------------------------------------------------- sending


def split_groups(
    runner: ExecutionRunner, intents: Sequence[OrderIntent], capabilities: OmsCapabilities
) -> tuple[list[list[OrderIntent]], list[OrderIntent]]:
    """Native OCO legs, grouped for `submit_group` (when the OMS serves it), and the rest."""
    book = runner.model.protection
    if book is None or not capabilities.order_groups:
        return [], list(intents)
    groups: dict[str, list[OrderIntent]] = {}
    rest: list[OrderIntent] = []
    for intent in intents:
        if intent.oco_group_id and book.is_resting_leg(intent.client_order_id):
            groups.setdefault(intent.oco_group_id, []).append(intent)
        else:
            rest.append(intent)
    return list(groups.values()), rest


async def send_group(
    engine: Engine, runner: ExecutionRunner, intents: Sequence[OrderIntent]
) -> None:
    """One native OCO group to the OMS, atomically; then the answer through the step path.
    A refusal (not retryable) rejects the legs here, which turns the position to emulation;
    a transient failure leaves them recorded for reconciliation (resent as one group)."""
    try:
        views = await engine.oms.submit_group(intents, account_id=runner.info.account_id)
    except OmsError as exc:
        _log.warning(
            "oms refused or missed a protective group",
            execution_id=str(runner.execution_id),
            orders=len(intents),
            error=str(exc)[:200],
            retryable=exc.retryable,
        )
        if exc.retryable:
            engine.on_unsent(runner)
            return
        refused = [_refused_view(i, runner.info.account_id, str(exc)[:200]) for i in intents]
        await engine.supervisor.guard(runner, engine.act(runner, lambda s: s.apply_views(refused)))
        return
    await engine.supervisor.guard(runner, engine.act(runner, lambda s: s.apply_views(views)))


def _refused_view(intent: OrderIntent, account_id: str, why: str) -> OmsOrder:
    return OmsOrder(
        client_order_id=intent.client_order_id,
        oms_order_id="",
        execution_id=intent.execution_id,
        account_id=account_id,
        symbol=intent.symbol,
        side=intent.side,
        order_type=intent.order_type,
        quantity=intent.quantity,
        limit_price=intent.limit_price,
        status=OrderStatus.REJECTED,
        filled_quantity=ZERO,
        avg_fill_price=ZERO,
        fills=(),
        reason=why or "REFUSED",
    )
