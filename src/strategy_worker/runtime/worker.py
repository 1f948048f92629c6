"""The worker: every part of the runtime, built once and run together.

Transport-free: Kafka (or paper mode's file intake) calls `handle_strategies` and
`handle_control`; a handler returns only once what the message caused is committed, so the
caller may commit its offset. Only the wiring (`runtime/wiring.py`) builds a Worker; the
parts it owns receive the narrow dependencies they use and never this object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial

from strategy_worker.auth import ControlVerifier
from strategy_worker.domain.clock import Clock
from strategy_worker.domain.risk.manager import RiskManager
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import (
    BarFeed,
    BarStore,
    DeadLetterSink,
    EventPublisher,
    OmsGateway,
    PriceFeed,
    PriceSource,
)
from strategy_worker.runtime import decide as rules
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.control import ControlDesk
from strategy_worker.runtime.decide import ledger_repaired
from strategy_worker.runtime.engine import Engine
from strategy_worker.runtime.exposure import FleetExposure
from strategy_worker.runtime.intake import IncomingStrategy, Intake
from strategy_worker.runtime.leases import LeaseKeeper
from strategy_worker.runtime.loop_lag import watch_loop_lag
from strategy_worker.runtime.monitor import Monitor
from strategy_worker.runtime.price_watch import watch_prices
from strategy_worker.runtime.protection import ProtectionDesk
from strategy_worker.runtime.reconcile import Reconciler
from strategy_worker.runtime.relay import OutboxRelay
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.runtime.signals import SignalDesk
from strategy_worker.runtime.step import StepContext
from strategy_worker.runtime.supervisor import Sleep, Supervisor
from strategy_worker.store import Store

_log = get_logger(__name__)

_STOP_POLL_S = 0.05
_RELOAD_S = 0.5
_FLEET_PNL_S = 15.0
_PRUNE_S = 3600.0
_BAR_TICK_S = 1.0


class Worker:
    """Everything one worker process runs, wired to its ports."""

    def __init__(
        self,
        *,
        settings: RuntimeSettings,
        store: Store,
        oms: OmsGateway,
        prices: PriceSource,
        publisher: EventPublisher,
        dead_letters: DeadLetterSink,
        metrics: WorkerMetrics,
        clock: Clock,
        sleep: Sleep,
        real_sleep: Sleep = asyncio.sleep,
        price_feed: PriceFeed | None = None,
        control_verifier: ControlVerifier,
        token_clock: Clock | None = None,
        housekeeping: Sequence[tuple[str, float, Callable[[], Awaitable[object]]]] = (),
        market: BarStore | None = None,
        bar_feed: BarFeed | None = None,
        bar_source: str = "kafka",
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._sleep = sleep
        self._real_sleep = real_sleep
        self._price_feed = price_feed
        self._housekeeping = list(housekeeping)
        """(name, interval, job): periodic jobs of the store (e.g. snapshot retention)."""
        self._dead_letters = dead_letters
        self.book = ExecutionBook(
            metrics, lambda ids: store.release_executions(settings.owner_id, ids)
        )
        self.supervisor = Supervisor(on_fault=self._fault, on_lost=self._lost)
        self.risk = RiskManager(settings.limits, clock)
        self.oms = oms
        self.protection = ProtectionDesk(metrics)
        self.exposure = FleetExposure(self.book)
        ctx = StepContext(
            clock=clock,
            risk=self.risk,
            exposure=self.exposure,
            price_max_age=settings.price_max_age,
            protection=self.protection,
        )
        self.engine = Engine(
            store=store,
            oms=oms,
            book=self.book,
            ctx=ctx,
            exposure=self.exposure,
            supervisor=self.supervisor,
            metrics=metrics,
            sleep=sleep,
        )
        self.reconciler = Reconciler(
            owner_id=settings.owner_id,
            book=self.book,
            engine=self.engine,
            oms=oms,
            store=store,
            supervisor=self.supervisor,
            metrics=metrics,
            sleep=real_sleep,
            monotonic=lambda: asyncio.get_running_loop().time(),
        )
        self.engine.on_unsent = self.reconciler.retry_unsent
        self.monitor = Monitor(
            book=self.book,
            engine=self.engine,
            prices=prices,
            store=store,
            clock=clock,
            metrics=metrics,
            drift_threshold=settings.drift_threshold,
            protection_desk=self.protection,
        )
        self.intake = Intake(
            settings=settings,
            store=store,
            prices=prices,
            exposure=self.exposure,
            engine=self.engine,
            risk=self.risk,
            metrics=metrics,
            reject=self.reject,
        )
        self.controls = ControlDesk(
            store=store,
            book=self.book,
            engine=self.engine,
            supervisor=self.supervisor,
            clock=clock,
            token_clock=token_clock or clock,
            reject=self.reject,
            verifier=control_verifier,
        )
        self.leases = LeaseKeeper(
            settings=settings,
            store=store,
            book=self.book,
            engine=self.engine,
            supervisor=self.supervisor,
            clock=clock,
            metrics=metrics,
            reconcile=self.reconciler.reconcile,
            after_cycle=self.controls.spawn_pending,
            protection=self.protection,
            check=self.monitor.check,
        )
        self.relay = OutboxRelay(
            store=store,
            publisher=publisher,
            metrics=metrics,
            now=clock.now,
            retention=timedelta(seconds=settings.outbox_retention),
        )
        self.engine.on_committed = self.relay.nudge
        self.signals: SignalDesk | None = None
        """Strategies' own rules on closed bars (runtime/signals.py); None without a bar
        store (then rules are not evaluated and entries never fire)."""
        self._bar_feed = bar_feed
        self._bar_source = bar_source
        if market is not None:
            self.signals = SignalDesk(
                book=self.book,
                engine=self.engine,
                market=market,
                prices=prices,
                clock=clock,
                metrics=metrics,
                supervisor=self.supervisor,
                sleep=real_sleep,
                max_clock_skew=timedelta(seconds=settings.bar_clock_skew),
                build_from_prices=bar_feed is None,
            )
            self.monitor.observed = self.signals.observe
        self._started = False
        self._relay_task: asyncio.Task[None] | None = None
        self._shutdown_done = asyncio.Event()
        self._shutting_down = False
        self._abandoned = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume what this worker may own (a previous process under the same owner id is
        gone), then start the loops. A store that is briefly unreachable does not stop the
        start: the lease loop reclaims as soon as it answers. Protective orders rest at the
        OMS only once it said it can hold them (until then they are emulated)."""
        await self._capabilities()
        try:
            await self.leases.acquire(reclaim=True)
        except StrategyWorkerError as exc:
            if not exc.retryable:
                raise
            _log.warning("executions not resumed yet; the lease loop retries", error=str(exc))
        s = self.settings
        sup = self.supervisor
        sup.loop("monitor", s.position_check_interval, self.monitor.cycle, sleep=self._sleep)
        sup.loop("rebalance", s.rebalance_interval, self.monitor.rebalance_cycle, sleep=self._sleep)
        sup.loop("reconcile", s.reconcile_interval, self._reconcile, sleep=self._sleep)
        sup.loop("leases", s.heartbeat, self.leases.cycle, sleep=self._real_sleep)
        sup.loop("oms-probe", s.heartbeat, self.reconciler.probe, sleep=self._real_sleep)
        sup.loop("reload", _RELOAD_S, self.leases.reload_dirty, sleep=self._real_sleep)
        sup.loop("fleet-pnl", _FLEET_PNL_S, self._fleet_pnl, sleep=self._real_sleep)
        sup.loop("ledger", s.heartbeat, self._ledger_totals, sleep=self._real_sleep)
        sup.loop("ledger-audit", s.ledger_audit_interval, self.audit_ledger, sleep=self._real_sleep)
        sup.loop("outbox-prune", _PRUNE_S, self.relay.prune, sleep=self._real_sleep)
        for name, interval, job in self._housekeeping:
            sup.loop(name, interval, job, sleep=self._real_sleep)
        sup.watch(asyncio.create_task(self.reconciler.pump(), name="oms-reports"))
        self._relay_task = asyncio.create_task(self.relay.run(), name="outbox-relay")
        sup.watch(self._relay_task)
        if s.loop_lag_interval is not None:
            lag = watch_loop_lag(
                self.metrics.event_loop_lag_seconds.observe, interval=s.loop_lag_interval
            )
            sup.watch(asyncio.create_task(lag, name="loop-lag"))
        if self._price_feed is not None:
            sup.watch(
                asyncio.create_task(
                    watch_prices(self._price_feed, self.monitor.on_prices), name="price-watch"
                )
            )
        desk = self.signals
        if desk is not None:
            sup.loop("signal-bars", _BAR_TICK_S, desk.tick, sleep=self._sleep)
            sup.watch(asyncio.create_task(desk.run(), name="signal-built-bars"))
            if self._bar_feed is not None:
                sup.watch(
                    asyncio.create_task(
                        desk.pump(self._bar_feed, source=self._bar_source), name="bar-feed"
                    )
                )
        self._started = True

    async def wait(self) -> None:
        """Return only by raising the first failure of a background loop."""
        raise await self.supervisor.wait_failure()

    async def shutdown(self, policy: str | None = None) -> None:
        """Idempotent. `close` (the spec's default) stops every execution and waits, within
        the grace period, until each is flat at the OMS; what did not finish keeps its
        durable stop for the next owner. `handover` leaves positions open. Either way the
        leases are given back and the outbox is published as far as it can be."""
        if self._shutting_down:
            await self._shutdown_done.wait()
            return
        self._shutting_down = True
        policy = policy or self.settings.shutdown_policy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.grace_period
        try:
            if policy == "close" and self._started:
                await self._close_all(deadline)
            if self._relay_task is not None:
                # Let the batch in flight be marked before the loops are cancelled.
                self.relay.finish()
                await asyncio.wait([self._relay_task], timeout=min(5.0, self.settings.grace_period))
            await self.supervisor.stop_loops()
            await self.supervisor.drain(deadline - loop.time())
            if self._abandoned:
                return
            left = await self.book.remove_all(release=True)
            if left:
                _log.info("executions handed over", executions=len(left), policy=policy)
            await self._flush_outbox(min(10.0, self.settings.grace_period))
        finally:
            self._shutdown_done.set()

    async def abandon(self) -> None:
        """A forced quit (a second SIGTERM): every task cancelled at once, nothing handed
        over or closed out; the leases expire and another worker resumes the executions
        from what was committed, exactly as after a crash."""
        self._abandoned = True
        if self._shutting_down:
            await self.supervisor.abort()
            return
        self._shutting_down = True
        await self.supervisor.abort()
        self._shutdown_done.set()

    async def _close_all(self, deadline: float) -> None:
        runners = [r for r in self.book.running()]
        for i in range(0, len(runners), 500):
            await self.engine.act_many(
                runners[i : i + 500], lambda s: rules.begin_stop(s, reason="worker shutdown")
            )
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            if self._abandoned or not any(r.model.stopping for r in self.book):
                return
            await self._real_sleep(_STOP_POLL_S)
        _log.error(
            "shutdown grace period ran out; unfinished stops are left to the next owner",
            left=sum(1 for r in self.book if r.model.stopping),
        )

    async def _flush_outbox(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while loop.time() < end:
            try:
                if not await self.relay.relay_once():
                    return
            except Exception as exc:
                _log.warning(
                    "outbox not fully published at shutdown; the next relay will",
                    error=str(exc)[:200],
                )
                return

    # ------------------------------------------------------------------ input

    async def handle_strategies(self, batch: Sequence[IncomingStrategy]) -> None:
        """A poll of `strategy.approved` messages (see `Intake.admit`)."""
        await self.intake.admit(batch)

    async def handle_strategy(self, payload: bytes, source: str) -> None:
        await self.handle_strategies([IncomingStrategy(payload, source)])

    async def handle_control(self, payload: bytes, source: str) -> None:
        """stop / pause / resume, once per request id, only from the execution's owner."""
        await self.controls.handle(payload, source)

    async def reject(self, payload: bytes, code: str, reason: str, source: str) -> None:
        """Dead-letter one message with its reason, counted by code."""
        _log.warning("message dead-lettered", code=code, reason=reason, source=source)
        self.metrics.record_dead_letter(code)
        await self._dead_letters.dead_letter(payload, code=code, reason=reason, source=source)

    async def ready(self) -> bool:
        """Readiness of the executions themselves: none waits to be reloaded, and no stop
        has failed to complete (each also raised a CRITICAL risk event)."""
        dirty = len(self.book.dirty())
        stuck = sum(
            1 for r in self.book if r.model.plans.stop is not None and r.model.plans.stop.alerted
        )
        self.metrics.stops_incomplete.set(stuck)
        return dirty == 0 and stuck == 0

    # ------------------------------------------------------------------ internals

    async def _fault(self, runner: ExecutionRunner, exc: BaseException) -> None:
        await self.engine.fault(runner, exc)

    async def _lost(self, runner: ExecutionRunner) -> None:
        await self.engine.lost(runner)

    async def _reconcile(self) -> None:
        await self._capabilities()
        await self.reconciler.cycle()

    async def _capabilities(self) -> None:
        """What the OMS holds natively, asked at start and again with every reconciliation
        round (an OMS that was down at start, or came back with other features); a failure
        keeps the last answer."""
        try:
            await self.protection.refresh(self.oms, self.book)
        except StrategyWorkerError as exc:
            _log.warning("oms capabilities unknown; protection emulated meanwhile", error=str(exc))

    async def _fleet_pnl(self) -> None:
        self.metrics.set_pnl_total(await self.store.fleet_pnl())

    async def _ledger_totals(self) -> None:
        """What other workers' commits moved: the totals this worker's checks start from."""
        self.exposure.observe(await self.store.ledger_totals(self.book.user_ids()))

    async def audit_ledger(self) -> None:
        """Recompute the ledger from orders and positions; export and repair a difference
        (each repaired execution gets a risk event from its owner's next step)."""
        audit = await self.store.audit_ledger()
        self.metrics.ledger_difference.set(float(audit.difference))
        if audit.difference or audit.repaired:
            _log.error(
                "risk ledger repaired",
                difference=str(audit.difference),
                executions=len(audit.repaired),
            )
        for execution_id, (held, recomputed) in audit.repaired.items():
            runner = self.book.get(execution_id)
            if runner is not None:
                self.book.hold(runner, recomputed)
                self.supervisor.spawn(
                    self.engine.act(
                        runner, partial(ledger_repaired, held=held, recomputed=recomputed)
                    ),
                    f"ledger-repaired-{execution_id}",
                )
