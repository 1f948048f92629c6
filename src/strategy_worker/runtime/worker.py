"""The worker: takes approved strategies and control requests, owns executions through
leases, runs the monitor, rebalance, reconcile and lease ticks, and shuts down by policy.

Transport-free: Kafka (or paper mode's file intake) calls `handle_strategy` and
`handle_control`; a handler returns only once what the message caused is durable, so the
caller may commit its offset. Background loops run in one task group; an unexpected error in
a loop is logged with its traceback and stops the worker (never swallowed), while an error
inside one execution only moves that execution to `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from decimal import Decimal
from typing import Any, Protocol

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import Side
from strategy_worker.domain.risk.manager import RiskManager
from strategy_worker.errors import OmsError, StoreError, StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import DeadLetterSink, EventSink, OmsGateway, PriceFeed, PriceSource
from strategy_worker.runtime.control import ControlDesk
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import Outbox
from strategy_worker.runtime.intake import IncomingStrategy, admit_strategies
from strategy_worker.runtime.price_watch import PriceWatch
from strategy_worker.runtime.reconcile import Reconciler
from strategy_worker.runtime.restore import order_states, runner_from_record
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.store import (
    ExecutionRecord,
    ExecutionStatus,
    LeaseLostError,
    SnapshotRecord,
    Store,
)

_log = get_logger(__name__)
_STATE_BATCH = 500  # quiet runners whose states are written together (and locks held)


class RuntimeClock(Protocol):
    """The domain's clock plus sleeping in the same (possibly accelerated) time frame."""

    def now(self) -> Any: ...

    async def sleep(self, seconds: float) -> None: ...


class Worker:
    """Everything one worker process runs, wired to its ports."""

    def __init__(
        self,
        *,
        settings: RuntimeSettings,
        store: Store,
        oms: OmsGateway,
        prices: PriceSource,
        events: EventSink,
        dead_letters: DeadLetterSink,
        metrics: WorkerMetrics,
        clock: RuntimeClock,
        price_feed: PriceFeed | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.oms = oms
        self.prices = prices
        self.events = events
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.clock = clock
        self.price_feed = price_feed
        """Optional: stop-losses then react to each price, not only to the monitor cycle."""
        self.risk_manager = RiskManager(settings.limits, clock)
        self.runners: dict[uuid.UUID, ExecutionRunner] = {}
        self._exposure = ZERO
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.controls = ControlDesk(self)
        self.reconciler = Reconciler(self)
        self.last_loop_error: BaseException | None = None

    # ------------------------------------------------------------------ worker view

    @property
    def exposure(self) -> Decimal:
        """Worker-wide exposure, refreshed every monitor cycle and raised by each buy sent."""
        return self._exposure

    def refresh_exposure(self) -> None:
        self._exposure = sum((r.exposure() for r in self.runners.values()), ZERO)

    def runner_deps(self) -> dict[str, Any]:
        """The ports every ExecutionRunner of this worker is built with."""
        return {
            "store": self.store,
            "oms": self.oms,
            "events": self.events,
            "metrics": self.metrics,
            "worker": self,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume what this worker may own (including what a previous process under the
        same owner id held: it is gone), then start the background loops."""
        await self.acquire(reclaim=True)
        s = self.settings
        self._loops = [
            self._loop("monitor", s.position_check_interval, self.monitor_cycle),
            self._loop("rebalance", s.rebalance_interval, self.rebalance_cycle),
            self._loop("leases", s.heartbeat, self.lease_cycle, clock_time=False),
            self._loop("reconcile", s.reconcile_interval, self.reconcile_cycle),
            asyncio.create_task(self.reconciler.pump(), name="oms-reports"),
        ]
        if self.price_feed is not None:
            watch = PriceWatch(self, self.price_feed)
            self._loops.append(asyncio.create_task(watch.run(), name="price-watch"))

    def _loop(
        self,
        name: str,
        interval: float,
        body: Callable[[], Awaitable[None]],
        *,
        clock_time: bool = True,
    ) -> asyncio.Task[None]:
        async def run() -> None:
            while not self._stopping.is_set():
                if clock_time:
                    await self.clock.sleep(interval)
                else:
                    await asyncio.sleep(interval)
                if self._stopping.is_set():
                    return
                try:
                    await body()
                except StrategyWorkerError as exc:
                    if not exc.retryable:
                        raise
                    # A database restart or an OMS outage must not stop the worker: the
                    # next cycle tries again (state written so far is consistent).
                    _log.warning("cycle failed; retrying next cycle", loop=name, error=str(exc))

        return asyncio.create_task(run(), name=name)

    async def wait(self) -> None:
        """Return when a background loop failed (re-raising its error) or stop began."""
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                [*self._loops, stop_wait], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop_wait.cancel()
        for task in done:
            if task is not stop_wait and not task.cancelled() and task.exception():
                self.last_loop_error = task.exception()
                _log.error(
                    "background loop failed; stopping the worker",
                    loop=task.get_name(),
                    exc_info=task.exception(),
                )
                raise task.exception()  # type: ignore[misc]

    async def shutdown(self, policy: str | None = None) -> None:
        """Idempotent. `close` (the spec's default) closes every position and marks the
        executions stopped; `handover` leaves them open and releases the leases so another
        worker resumes them. Bounded by the grace period."""
        if self._stopping.is_set():
            await self._stopped.wait()
            return
        self._stopping.set()
        policy = policy or self.settings.shutdown_policy
        # One deadline for the whole shutdown: work in flight and the closes share it.
        deadline = asyncio.get_running_loop().time() + self.settings.grace_period
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.settings.grace_period)
        try:
            async with asyncio.timeout_at(deadline):
                if policy == "close":
                    # Guarded: an execution whose stop fails (the OMS is down) keeps its lease
                    # and its durable stop marker for a successor; the others still stop, and
                    # the caller still closes the adapters (offsets committed, events flushed).
                    await asyncio.gather(
                        *(
                            self.guard(r, self.stop_execution(r, reason="worker shutdown"))
                            for r in list(self.runners.values())
                            if r.running
                        )
                    )
                else:
                    await self._handover()
        except TimeoutError:
            _log.error("shutdown grace period ran out", left=len(self.runners))
        finally:
            self._stopped.set()

    async def _handover(self) -> None:
        for runner in list(self.runners.values()):
            async with runner.lock:
                with contextlib.suppress(StoreError):
                    await self.store.update_execution_state(
                        runner.execution_id, runner.state(), fence=runner.fence
                    )
        with contextlib.suppress(StoreError):
            await self.store.release_executions(self.settings.owner_id, list(self.runners))
        self.runners.clear()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run tracked background work (awaited by shutdown)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ intake

    async def handle_strategy(self, payload: bytes, source: str) -> None:
        """One `strategy.approved` message (see `handle_strategies`)."""
        await admit_strategies(self, [IncomingStrategy(payload, source)])

    async def handle_strategies(self, batch: Sequence[IncomingStrategy]) -> None:
        """A poll of `strategy.approved` messages: dead-letter what is malformed, ignore
        replays, create the rest with their first order intents durably in one transaction,
        then submit the orders in the background."""
        await admit_strategies(self, batch)

    def add_exposure(self, amount: Decimal) -> None:
        """Raise the worker-wide exposure by buys just recorded (refreshed each monitor)."""
        self._exposure += amount

    async def reject(self, payload: bytes, code: str, reason: str, source: str) -> None:
        """Dead-letter one message with its reason, counted by code."""
        _log.warning("message dead-lettered", code=code, reason=reason, source=source)
        self.metrics.record_dead_letter(code)
        await self.dead_letters.dead_letter(payload, code=code, reason=reason, source=source)

    # ------------------------------------------------------------------ control

    async def handle_control(self, payload: bytes, source: str) -> None:
        """stop / pause / resume, once per request id, only from the execution's owner."""
        await self.controls.handle(payload, source)

    async def apply_pending_controls(self, runners: list[ExecutionRunner] | None = None) -> None:
        """Apply the RECEIVED control requests of executions this worker drives."""
        await self.controls.apply_pending(runners)

    @property
    def stopping(self) -> bool:
        """True once shutdown began: no new background work is started."""
        return self._stopping.is_set()

    async def set_paused(
        self, runner: ExecutionRunner, paused: bool, reason: str, request_id: uuid.UUID | None
    ) -> None:
        async with runner.lock:
            target = ExecutionStatus.PAUSED if paused else ExecutionStatus.ACTIVE
            if not runner.running or runner.status is target:
                return
            runner.status = target
            await self.store.update_execution_state(
                runner.execution_id, runner.state(), fence=runner.fence
            )
            out = Outbox()
            out.events.append(
                runner.status_event("paused" if paused else "resumed", reason, request_id)
            )
            await runner.flush(out)

    # ------------------------------------------------------------------ stopping

    async def stop_execution(
        self, runner: ExecutionRunner, *, reason: str, request_id: uuid.UUID | None = None
    ) -> None:
        """The spec's step 6: stop trading, close every position, final snapshot, `stopped`."""
        async with runner.lock:
            if not runner.running:
                return
            # Durable "stop in progress" marker: the rebalancer stands down from here on, and
            # a worker that takes this execution over finishes the stop (see `resume`).
            runner.stop_reason = reason
            await self.store.update_execution_state(
                runner.execution_id, runner.state(), fence=runner.fence
            )
            out = Outbox()
            for order in runner.open_orders:
                if order.intent.side is Side.BUY and order.request_cancel():
                    with contextlib.suppress(Exception):
                        await self.oms.cancel(order.client_order_id)
            closing = runner.closing_intents(out)
            await runner.record_and_submit(closing, out)
            await runner.flush(out)
        if not await runner.wait_flat(self.settings.close_timeout):
            await self.reconcile(runner)
        async with runner.lock:
            prices = await self.prices.get_prices(runner.info.symbols)
            runner.valuate(prices)
            runner.status = ExecutionStatus.STOPPED
            runner.stop_reason = reason
            await self.store.update_execution_state(
                runner.execution_id, runner.state(), fence=runner.fence
            )
            await self.store.insert_snapshots([runner.snapshot()])
            out = Outbox()
            out.events.append(runner.stopped_event(reason, request_id))
            await runner.flush(out)
        await self._forget(runner)
        _log.info("execution stopped", execution_id=str(runner.execution_id), reason=reason)

    async def _forget(self, runner: ExecutionRunner) -> None:
        self.runners.pop(runner.execution_id, None)
        self.metrics.executions_active.set(len(self.runners))
        self.metrics.forget_execution(str(runner.execution_id))
        with contextlib.suppress(StoreError):
            await self.store.release_executions(self.settings.owner_id, [runner.execution_id])

    async def fail_execution(self, runner: ExecutionRunner, exc: BaseException) -> None:
        """One execution's unexpected error: status `error`, an event, the lease released;
        every other execution carries on."""
        _log.error("execution failed", execution_id=str(runner.execution_id), exc_info=exc)
        runner.status = ExecutionStatus.ERROR
        runner.stop_reason = f"{type(exc).__name__}: {exc}"[:500]
        with contextlib.suppress(Exception):
            await self.store.update_execution_state(
                runner.execution_id, runner.state(), fence=runner.fence
            )
            await self.events.publish(
                runner.context.key, runner.error_event(type(exc).__name__, str(exc)[:500])
            )
        await self._forget(runner)

    async def guard(self, runner: ExecutionRunner, work: Awaitable[None]) -> None:
        """Run one execution's work so that its failure never disturbs another."""
        try:
            await work
        except LeaseLostError:
            _log.warning("lease lost; execution dropped", execution_id=str(runner.execution_id))
            self.runners.pop(runner.execution_id, None)
        except StoreError as exc:
            if not exc.retryable:
                await self.fail_execution(runner, exc)
                return
            # Memory may be ahead of the store: reload this execution from the store + OMS.
            _log.warning("store unavailable; execution will be reloaded", error=str(exc))
            runner.dirty = True
        except OmsError as exc:
            if not exc.retryable:
                await self.fail_execution(runner, exc)
                return
            # The OMS is down or the breaker is open: nothing was decided, so nothing is
            # lost; reconciliation asks again once it answers.
            _log.warning(
                "oms unavailable; execution carries on", execution_id=str(runner.execution_id)
            )
        except Exception as exc:
            await self.fail_execution(runner, exc)

    # ------------------------------------------------------------------ ticks

    async def monitor_cycle(self) -> None:
        """Every position_check_interval: prices, P&L, daily loss, stop-losses, snapshots."""
        started = time.perf_counter()
        runners = [r for r in self.runners.values() if r.running and not r.dirty]
        if not runners:
            return
        symbols = sorted({s for r in runners for s in r.info.symbols} | self._held(runners))
        prices = await self.prices.get_prices(symbols)
        snapshots: list[SnapshotRecord] = []
        quiet: list[ExecutionRunner] = []
        try:
            for runner in runners:
                await self.guard(runner, self._monitor_one(runner, prices, snapshots, quiet))
                if len(quiet) >= _STATE_BATCH:
                    await self._write_quiet(quiet)
        finally:
            await self._write_quiet(quiet)
        if snapshots:
            with contextlib.suppress(StoreError):
                await self.store.insert_snapshots(snapshots)
        self.refresh_exposure()
        self.metrics.set_pnl_total(
            sum((r.last_valuation.total_pnl for r in runners if r.last_valuation), ZERO)
        )
        self.metrics.monitor_cycle_seconds.observe(time.perf_counter() - started)
        await self._reload_dirty()

    @staticmethod
    def _held(runners: list[ExecutionRunner]) -> set[str]:
        return {s for r in runners for s in r.portfolio.positions}

    async def _monitor_one(
        self,
        runner: ExecutionRunner,
        prices: Any,
        snapshots: list[Any],
        quiet: list[ExecutionRunner],
    ) -> None:
        await runner.lock.acquire()
        try:
            out = Outbox()
            intents = runner.monitor(prices, out)
            if not intents and not out.events and not out.risk_rows:
                # Nothing happened but new marks: its state joins one batched write, and
                # its lock is held until then so no newer state can be overwritten.
                snapshots.append(runner.snapshot())
                quiet.append(runner)
                return
            await runner.record_and_submit(intents, out)
            await self.store.update_execution_state(
                runner.execution_id, runner.state(), fence=runner.fence
            )
            snapshots.append(runner.snapshot())
            await runner.flush(out)
        except BaseException:
            runner.lock.release()
            raise
        runner.lock.release()

    async def _write_quiet(self, quiet: list[ExecutionRunner]) -> None:
        """Write the states of quiet runners in one statement, then release their locks."""
        if not quiet:
            return
        batch = list(quiet)
        quiet.clear()
        try:
            lost = await self.store.update_execution_states([r.state_write() for r in batch])
        except StoreError as exc:
            if exc.retryable:
                _log.warning("store unavailable; executions will be reloaded", error=str(exc))
            else:
                _log.error("state write failed; executions will be reloaded", error=str(exc))
            # Memory may be ahead of the store: reload them from the store and the OMS.
            for runner in batch:
                runner.dirty = True
            lost = set()
        finally:
            for runner in batch:
                runner.lock.release()
        for execution_id in lost:
            _log.warning("lease lost; execution dropped", execution_id=str(execution_id))
            self.runners.pop(execution_id, None)

    async def rebalance_cycle(self) -> None:
        """Every rebalance_interval: bring drifted executions back to their targets."""
        runners = [
            r for r in self.runners.values() if r.status is ExecutionStatus.ACTIVE and not r.dirty
        ]
        if not runners:
            return
        symbols = sorted({s for r in runners for s in r.info.symbols} | self._held(runners))
        prices = await self.prices.get_prices(symbols)
        for runner in runners:
            await self.guard(runner, self._rebalance_one(runner, prices))

    async def _rebalance_one(self, runner: ExecutionRunner, prices: Any) -> None:
        """Sells first; once they filled (bounded wait), the buys are gated against the cash
        they freed, renumbered after the sells, recorded and sent."""
        started = time.perf_counter()
        async with runner.lock:
            if runner.stop_reason is not None:
                return  # a stop began while this cycle waited for the lock
            out = Outbox()
            sells, buys, drift = runner.plan_rebalance(prices, self.settings.drift_threshold, out)
            sent = runner.renumber(runner.gate(runner.renumber(sells), out)) if sells else []
            await runner.record_and_submit(sent, out)
            await runner.flush(out)
        if not buys:
            if sent:
                await self._publish(runner, runner.rebalanced_event(drift, sent))
            return
        if sent:
            await runner.wait_flat(self.settings.close_timeout)
        async with runner.lock:
            if runner.stop_reason is not None:
                return  # stopping while the sells filled: buying back in would undo the stop
            out = Outbox()
            approved = runner.renumber(runner.gate(runner.renumber(buys), out))
            self._exposure += sum((i.notional for i in approved), ZERO)
            await runner.record_and_submit(approved, out)
            if sent or approved:
                out.events.append(runner.rebalanced_event(drift, [*sent, *approved]))
            await runner.flush(out)
        self.metrics.rebalance_seconds.observe(time.perf_counter() - started)

    async def _publish(self, runner: ExecutionRunner, event: Any) -> None:
        out = Outbox()
        out.events.append(event)
        await runner.flush(out)

    # ------------------------------------------------------------------ leases & recovery

    async def lease_cycle(self) -> None:
        """Heartbeat: renew what we hold (drop what we lost), take over expired executions."""
        owned = list(self.runners)
        if owned:
            held = await self.store.renew_leases(
                self.settings.owner_id, owned, lease_seconds=self.settings.lease_seconds
            )
            for execution_id in set(owned) - held:
                _log.warning("lease lost", execution_id=str(execution_id))
                self.runners.pop(execution_id, None)
        await self.acquire()
        self.controls.spawn_pending()

    async def acquire(self, *, reclaim: bool = False) -> None:
        """Take over unowned or expired executions and resume them."""
        if self._stopping.is_set():
            return
        limit = self.settings.max_executions - len(self.runners)
        if limit <= 0:
            return
        records = await self.store.acquire_executions(
            self.settings.owner_id,
            lease_seconds=self.settings.lease_seconds,
            limit=limit,
            reclaim=reclaim,
        )
        for record in records:
            await self.resume(record)

    async def resume(self, record: ExecutionRecord) -> None:
        """Rebuild an execution from the store and reconcile it with the OMS."""
        runner = runner_from_record(
            record,
            worker_limits=self.settings.limits,
            risk_manager=self.risk_manager,
            clock=self.clock,
            **self.runner_deps(),
        )
        orders = await self.store.get_orders(record.execution_id)
        fills = await self.store.get_fills(record.execution_id)
        runner.orders.update(order_states(orders, [f.fill for f in fills]))
        if runner.running:
            runner.stop_reason = record.state.stop_reason
        self.runners[record.execution_id] = runner
        self.metrics.executions_active.set(len(self.runners))
        _log.info(
            "execution resumed",
            execution_id=str(record.execution_id),
            open_orders=len(runner.open_orders),
        )
        await self.guard(runner, self.reconcile(runner))
        if runner.stop_reason is not None and self.runners.get(record.execution_id) is runner:
            # The previous owner was stopping it (and ran out of time or died): finish that
            # stop, with its closing orders already recorded, instead of trading it again.
            _log.info("resuming an interrupted stop", execution_id=str(record.execution_id))
            self.spawn(
                self.guard(runner, self.stop_execution(runner, reason=runner.stop_reason)),
                f"stop-{record.execution_id}",
            )

    async def _reload_dirty(self) -> None:
        for runner in [r for r in self.runners.values() if r.dirty]:
            record = await self.store.get_execution(runner.execution_id)
            self.runners.pop(runner.execution_id, None)
            if record is not None and record.owner_id == self.settings.owner_id:
                await self.resume(record)

    async def reconcile(self, runner: ExecutionRunner) -> None:
        """Ask the OMS about every order of the execution (see `Reconciler.reconcile`)."""
        await self.reconciler.reconcile(runner)

    async def reconcile_cycle(self) -> None:
        """Every reconcile_interval: reconcile each running execution with the OMS."""
        await self.reconciler.cycle()
