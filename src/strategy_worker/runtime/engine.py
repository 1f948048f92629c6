"""Decide, then commit, then act: the one way anything happens to an execution.

`act(runner, decide)` takes the runner's lock, forks a `Step`, lets `decide` fill it,
settles it (`decide.settle`), and commits it in one transaction; only after that commit
does the runner adopt the new model, and only then does the engine act on the decision:
orders to the OMS (through the worker's submission queue, `runtime/submit.py`, which
batches the orders of every execution; native protective legs as one atomic group each),
cancel requests, a stop's finish once flat, a timer for what is due later (a rate token, a
protective order's grace or back-off). `act_many` does the same for many executions in one
transaction.

A commit whose outcome is unknown (the connection broke, the task was cancelled) marks its
runners dirty: nothing acts on them until they are reloaded from the store. A commit that
certainly failed (a conflict) leaves them as they were. A fence that no longer holds drops
the runner: another worker owns the execution now.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderIntent, OrderStatus, Side
from strategy_worker.errors import OmsError, StoreError, StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import OmsGateway, OrderRateLimit
from strategy_worker.runtime import decide as rules
from strategy_worker.runtime import protection
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.exposure import FleetExposure
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.step import Step, StepContext, is_closing
from strategy_worker.runtime.submit import SubmitQueue
from strategy_worker.runtime.supervisor import Sleep, Supervisor
from strategy_worker.store import LedgerCaps, LedgerRefusedError, OutboxEvent, Store

_log = get_logger(__name__)

Decide = Callable[[Step], object]
LEDGER_ATTEMPTS = 3
"""Commits refused by the risk ledger before new buys are denied outright."""


class Engine:
    """Runs steps for one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        oms: OmsGateway,
        book: ExecutionBook,
        ctx: StepContext,
        exposure: FleetExposure,
        supervisor: Supervisor,
        metrics: WorkerMetrics,
        sleep: Sleep,
    ) -> None:
        self.store = store
        self.oms = oms
        self.book = book
        self.ctx = ctx
        self.exposure = exposure
        self.caps = LedgerCaps(
            fleet=ctx.risk.limits.max_total_exposure, user=ctx.risk.limits.max_user_exposure
        )
        self.supervisor = supervisor
        self.metrics = metrics
        self._sleep = sleep
        self._timers: set[tuple[object, str]] = set()
        self.order_rate: OrderRateLimit | None = None
        """The fleet-wide rate limit toward the OMS (Redis), when configured."""
        self.on_committed: Callable[[], None] = lambda: None
        """Called after every commit with events (the wiring nudges the outbox relay)."""
        self.on_unsent: Callable[[ExecutionRunner], None] = lambda runner: None
        self._first_order: dict[uuid.UUID, float] = {}
        """Executions created from a message with a publish time, until their first order
        is at the OMS (`strategy_publish_to_order_seconds`) or refused."""
        """Called when orders could not be sent (or the OMS must be asked about some):
        the wiring points it at reconciliation with backoff."""
        self.submitter = SubmitQueue(
            oms=oms,
            act_many=self.act_many,
            unsent=lambda runner: self.on_unsent(runner),
            may_leave=may_leave,
            spawn=supervisor.spawn,
            metrics=metrics,
        )
        """Where `send` hands orders over: one queue, shared batches, for the worker."""

    # ------------------------------------------------------------------ stepping

    def step(self, runner: ExecutionRunner) -> Step:
        return Step(runner, self.ctx)

    async def act(self, runner: ExecutionRunner, decide: Decide) -> Step | None:
        """One step of one execution, committed; None when it was not acted on (no longer
        ours, dirty, or nothing to write)."""
        done = await self.act_many([runner], decide)
        return done[0] if done else None

    async def act_many(
        self,
        runners: Sequence[ExecutionRunner],
        decide: Callable[[Step], object],
        *,
        cursor: tuple[str, int] | None = None,
    ) -> list[Step]:
        """One step for each runner, committed together (locks taken in id order). When the
        risk ledger refuses the commit (another worker took the capacity meanwhile), the
        steps are decided again at the totals it returned; after `LEDGER_ATTEMPTS`, once
        more with every new buy denied, so the rest of the decision still happens."""
        ordered = sorted({id(r): r for r in runners}.values(), key=lambda r: r.execution_id)
        held: list[ExecutionRunner] = []
        failed: list[tuple[ExecutionRunner, Exception]] = []
        done: list[Step] = []
        try:
            for runner in ordered:
                await runner.lock.acquire()
                held.append(runner)
            for attempt in range(LEDGER_ATTEMPTS + 1):
                failed.clear()
                steps = self._decide(held, decide, failed)
                try:
                    done = await self.commit(steps, cursor=cursor)
                    break
                except LedgerRefusedError as refusal:
                    await self._refused(refusal, last=attempt == LEDGER_ATTEMPTS - 1)
            else:  # pragma: no cover - the last attempt denies every buy: never refused
                raise StoreError("the risk ledger refused a commit without new buys")
        finally:
            self.exposure.full = False
            for runner in held:
                runner.lock.release()
        for runner, error in failed:
            self.supervisor.spawn(self.fault(runner, error), f"fault-{runner.execution_id}")
        return done

    def _decide(
        self,
        runners: Sequence[ExecutionRunner],
        decide: Callable[[Step], object],
        failed: list[tuple[ExecutionRunner, Exception]],
    ) -> list[Step]:
        steps: list[Step] = []
        for runner in runners:
            if not self.book.is_current(runner) or runner.dirty:
                continue
            step = self.step(runner)
            try:
                decide(step)
                rules.settle(step)
            except Exception as bug:  # one execution's bug never holds up the others
                failed.append((runner, bug))
                continue
            steps.append(step)
        return steps

    async def _refused(self, refusal: LedgerRefusedError, *, last: bool) -> None:
        """Learn the totals the ledger holds, to decide again at them."""
        _log.info("risk ledger refused a commit; deciding again", reason=str(refusal))
        self.exposure.observe({refusal.scope: refusal.exposure})
        with contextlib.suppress(StoreError):
            self.exposure.observe(await self.store.ledger_totals(self.book.user_ids()))
        self.exposure.full = last

    # ------------------------------------------------------------------ committing

    async def commit(
        self,
        steps: Sequence[Step],
        *,
        cursor: tuple[str, int] | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> list[Step]:
        """Write the steps in one transaction and adopt the committed ones; the caller holds
        each step's runner lock. Returns the committed steps (then acted on)."""
        actions_only = [s for s in steps if not s.has_effects and (s.resend or s.cancels)]
        steps = [s for s in steps if s.has_effects]
        for step in actions_only:  # nothing to write: only orders to (re)send or cancel
            await self._after(step)
        if not steps and cursor is None and not events:
            return actions_only
        try:
            outcome = await self.store.commit(
                [s.write() for s in steps], cursor=cursor, caps=self.caps, events=events
            )
        except LedgerRefusedError:
            raise  # certainly not written: the caller decides again
        except StoreError as exc:
            if not exc.retryable:
                if len(steps) > 1:
                    return await self._commit_one_by_one(steps, cursor)
                raise
            self._unknown(steps, exc)
            raise
        except BaseException as exc:
            self._unknown(steps, exc)
            raise
        self.exposure.observe(outcome.ledger)
        if any(step.events for step in steps):
            self.on_committed()
        done: list[Step] = []
        for step in steps:
            runner = step.runner
            if step.execution_id in outcome.lost:
                _log.warning("lease lost; execution dropped", execution_id=str(runner.execution_id))
                await self.book.remove(runner, release=False)
                continue
            if step.execution_id in outcome.existed:
                continue
            step.model.version = step.version
            runner.adopt(step.model)
            self.book.hold(runner, step.exposure())
            if step.create is not None:
                self.book.add(runner)
            self.book.refresh(runner)
            self._count(step)
            done.append(step)
        for step in done:
            await self._after(step)
        return [*actions_only, *done]

    async def _commit_one_by_one(
        self, steps: Sequence[Step], cursor: tuple[str, int] | None
    ) -> list[Step]:
        """A batch failed for a reason no retry fixes: commit each alone, so only the
        culprit fails (its error goes to its own guard: a fault, closed by policy)."""
        done: list[Step] = []
        for step in steps:
            try:
                done += await self.commit([step])
            except StoreError as exc:
                if exc.retryable:
                    raise
                self.supervisor.spawn(self.fault(step.runner, exc), "fault")
        if cursor is not None:
            await self.commit([], cursor=cursor)
        return done

    def _unknown(self, steps: Iterable[Step], exc: BaseException) -> None:
        for step in steps:
            step.runner.dirty = True
        _log.warning(
            "commit outcome unknown; executions will be reloaded from the store",
            executions=len(list(steps)),
            error=str(exc)[:200] or type(exc).__name__,
        )

    def _count(self, step: Step) -> None:
        metrics = self.metrics
        execution_id = step.runner.execution_id
        if step.create is not None and step.published_at is not None:
            self._first_order[execution_id] = step.published_at
        written = step.protection_write()
        if written is not None and self.ctx.protection is not None:
            self.ctx.protection.note(execution_id, written.unprotected)
        for row in step.risk_rows:
            metrics.record_risk_event(row.event_type, row.severity.value)
        for event in step.events:
            kind = str(event.get("type"))
            if kind.endswith(".order_submitted"):
                metrics.orders_submitted.inc()
                published = self._first_order.pop(execution_id, None)
                if published is not None and (elapsed := time.time() - published) >= 0:
                    metrics.publish_to_order_seconds.observe(elapsed)
            elif kind.endswith(".order_rejected"):
                self._first_order.pop(execution_id, None)
                metrics.orders_rejected.labels(source=str(event.get("source"))).inc()
        for order in step.changed.values():
            if order.status is OrderStatus.FILLED:
                metrics.orders_filled.inc()

    # ------------------------------------------------------------------ acting on a commit

    async def _after(self, step: Step) -> None:
        runner = step.runner
        if step.release:
            await self.book.remove(runner, release=False)
            _log.info(
                "execution ended",
                execution_id=str(runner.execution_id),
                status=step.model.status.value,
            )
            return
        outgoing = [*step.resend, *step.intents]
        desk = self.ctx.protection
        caps = desk.capabilities if desk is not None else None
        groups, singles = (
            protection.split_groups(runner, outgoing, caps) if caps else ([], outgoing)
        )
        for group in groups:
            self.supervisor.spawn(
                protection.send_group(self, runner, group), f"send-group-{runner.execution_id}"
            )
        if singles:
            await self.send(runner, singles)
        for coid in step.cancels:
            self.supervisor.spawn(self._cancel(coid, runner), "cancel")
        self.arm_protection(runner)
        plans = runner.model.plans
        if plans.deferred:
            # Orders wait for a rate token: look again when the next one is due.
            delay = _token_wait(runner)
            self._once(runner, "token", lambda: self._wake(runner, delay))
        plan = plans.stop
        if plan is None:
            return
        if runner.is_flat():
            self._once(runner, "finish", lambda: self._finish(runner))
        elif any(
            o.status is OrderStatus.PENDING and not o.oms_order_id and o.intent not in outgoing
            for o in runner.model.live_orders()
        ):
            self.on_unsent(runner)  # a buy the OMS may never have seen holds the stop up
        elif runner.model.portfolio.positions and plan.next_round_at > step.timestamp:
            delay = plan.next_round_at - step.timestamp
            self._once(runner, "round", lambda: self._wake(runner, delay))

    def arm_protection(self, runner: ExecutionRunner) -> None:
        """A timer at the protection book's next deadline (a native leg's grace, a failed
        exit's back-off): after every commit, and for a runner just resumed or reloaded."""
        now = self.ctx.clock.now()
        wake = protection.next_wake(runner.model.protection, now)
        if wake is not None:
            due = f"protect@{now.timestamp() + wake:.3f}"
            self._once(runner, due, lambda: self._wake(runner, wake))

    async def send(self, runner: ExecutionRunner, intents: Sequence[OrderIntent]) -> None:
        """Recorded intents to the OMS (idempotent on their client order ids), then the
        answers through the order state machine: handed to the submission queue, which
        sends them with other executions' orders in one batch, checks each with
        `may_leave` as it leaves, and applies the answers in one commit. A failure leaves
        them recorded: the OMS is asked about each before anything is sent again. The
        fleet-wide rate limit is asked first (`_fleet_rate`)."""
        intents = await self._fleet_rate(runner, intents)
        if intents:
            self.submitter.put(runner, intents)

    async def _fleet_rate(
        self, runner: ExecutionRunner, intents: Sequence[OrderIntent]
    ) -> list[OrderIntent]:
        """What the fleet-wide rate limit lets go now (closing orders always). The rest stay
        recorded and unsent: reconciliation sends them, checked again, once tokens are back.
        When the limit cannot be asked (Redis away), the worker's own limit still holds and
        the orders go."""
        limit = self.order_rate
        if limit is None or not intents:
            return list(intents)
        closing = [i for i in intents if is_closing(i)]
        ordinary = [i for i in intents if not is_closing(i)]
        try:
            granted, _ = await limit.take(ordinary=len(ordinary), forced=len(closing))
        except StrategyWorkerError as exc:
            if not exc.retryable:
                raise
            _log.warning(
                "fleet rate limit unavailable; the worker's own limit applies", error=str(exc)[:200]
            )
            granted = len(ordinary)
        if granted < len(ordinary):
            self.on_unsent(runner)
        allowed = {i.client_order_id for i in (*closing, *ordinary[:granted])}
        return [i for i in intents if i.client_order_id in allowed]

    async def _cancel(self, client_order_id: str, runner: ExecutionRunner | None = None) -> None:
        try:
            await self.oms.cancel(client_order_id)
        except OmsError as exc:
            _log.info(
                "cancel request not delivered",
                client_order_id=client_order_id,
                error=str(exc)[:200],
            )
            if runner is not None:
                self.on_unsent(runner)  # reconciliation asks the OMS and cancels again

    def _once(
        self, runner: ExecutionRunner, kind: str, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Run `work()` for this runner unless the same kind is already pending for it. Keyed
        by the runner itself: a timer of the runner a reload replaced finds it no longer
        current and does nothing, so it must not hold back the new runner's."""
        key = (runner, kind)
        if key in self._timers:
            return
        self._timers.add(key)

        async def run() -> None:
            try:
                await self.supervisor.guard(runner, work())
            finally:
                self._timers.discard(key)

        if self.supervisor.spawn(run(), f"{kind}-{runner.execution_id}") is None:
            self._timers.discard(key)

    async def _finish(self, runner: ExecutionRunner) -> None:
        """A stopping execution flat here: end it once the OMS confirms it flat too."""
        positions = await self.oms.get_positions(runner.execution_id)
        await self.act(runner, lambda s: rules.finish_stop(s, positions))

    async def _wake(self, runner: ExecutionRunner, delay: float) -> None:
        await self._sleep(max(0.0, delay))
        await self.act(runner, lambda s: None)

    # ------------------------------------------------------------------ failures

    async def fault(self, runner: ExecutionRunner, exc: BaseException) -> None:
        """An unexpected failure of one execution's work: closed by policy (see
        `decide.fault`), its other executions untouched."""
        _log.error("execution failed", execution_id=str(runner.execution_id), exc_info=exc)
        code = type(exc).__name__
        text = str(exc) or code
        try:
            await self.act(runner, lambda s: rules.fault(s, code, text))
        except Exception as again:  # the policy itself failed: reload and let it retry
            runner.dirty = True
            _log.error(
                "fault policy failed; execution will be reloaded",
                execution_id=str(runner.execution_id),
                error=str(again)[:200],
            )

    async def lost(self, runner: ExecutionRunner) -> None:
        await self.book.remove(runner, release=False)


def _token_wait(runner: ExecutionRunner) -> float:
    """Seconds until the execution's rate bucket holds a whole token again (at least 50 ms:
    the worker's bucket may be the empty one)."""
    bucket = runner.model.risk.bucket
    missing = max(0.0, 1.0 - bucket.tokens)
    return max(0.05, missing / bucket.rate) if bucket.rate > 0 else 1.0


def may_leave(runner: ExecutionRunner, intent: OrderIntent) -> bool:
    """The last check before an order leaves, on the state committed right now: a buy only
    while the execution is active, not stopping, trading ACTIVE and the symbol not blocked;
    a sell (protective exits aside: the book bounds those) only while it and the other
    sells still working fit in what is held. A native protective leg may have sold shares
    since the sell was decided: such a sell stays unsent and reconciliation decides again."""
    model = runner.model
    if intent.side is Side.SELL:
        if intent.purpose.is_protective:
            return True
        pos = model.portfolio.positions.get(intent.symbol)
        held = pos.quantity if pos is not None else ZERO
        others = sum(
            (
                o.remaining_quantity
                for o in model.orders.values()
                if o.is_live
                and o.intent.side is Side.SELL
                and o.intent.symbol == intent.symbol
                and not o.intent.purpose.is_protective
                and o.client_order_id != intent.client_order_id
            ),
            ZERO,
        )
        return intent.quantity + others <= held
    return (
        model.status.value == "active"
        and model.plans.stop is None
        and model.risk.state.value == "ACTIVE"
        and not model.risk.stops.is_blocked(intent.symbol)
    )
