"""Keeping each execution's view equal to the OMS's.

- `reconcile(runner)`: ask the OMS about every order of the execution; apply what it says
  (missed fills, rejects, cancels) through the order state machine; orders it has never
  seen pass the risk gate again *now* and are resent (same client order id) or cancelled
  here (`decide.resubmit_unseen`; protective orders as `protection.resubmit` says), and
  cancels the protection book asked for go out again while the OMS shows the order live;
  once nothing is in flight (native legs resting untriggered do not count), compare
  positions: a difference moves the execution to REDUCING, a clean comparison clears a
  REDUCING that a difference caused.
- `pump()`: the OMS report stream, applied in batches (one commit per batch, the report
  cursor in it), resumed from the durable cursor after a restart.
- `retry_unsent(runner)`: after a failed send, reconcile with capped backoff until the OMS
  answers; `probe()` (every heartbeat) pings the OMS and, the moment it answers again, cuts
  every such backoff short, so orders resume within a heartbeat of the OMS's return.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import ExecutionReport, OmsOrder, OrderStatus
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import OmsGateway
from strategy_worker.runtime import decide as rules
from strategy_worker.runtime import protection
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.engine import Engine
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.step import Step
from strategy_worker.runtime.supervisor import Sleep, Supervisor
from strategy_worker.store import Store

_log = get_logger(__name__)

CURSOR_EVERY_S = 0.5
"""How often a report cursor is written when no batch commits it: it only shortens the
replay after a restart (reports apply idempotently)."""
_POSITIONS_DIFFER = "local positions differ from the OMS's"
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 30.0


class Reconciler:
    """Reconciliation and OMS reports for one worker's executions."""

    def __init__(
        self,
        *,
        owner_id: str,
        book: ExecutionBook,
        engine: Engine,
        oms: OmsGateway,
        store: Store,
        supervisor: Supervisor,
        metrics: WorkerMetrics,
        sleep: Sleep,
        monotonic: Callable[[], float],
    ) -> None:
        self._book = book
        self._engine = engine
        self._oms = oms
        self._store = store
        self._supervisor = supervisor
        self._metrics = metrics
        self._sleep = sleep
        self._monotonic = monotonic
        self._cursor = f"oms-reports:{owner_id}"
        self._seq_seen: int | None = None
        self._seq_written: int | None = None
        self._written_at = 0.0
        self._retrying: set[uuid.UUID] = set()
        self._again: set[uuid.UUID] = set()
        self._oms_back = asyncio.Event()
        self._oms_up = True

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self, runner: ExecutionRunner) -> None:
        """See the module docstring; raises what the OMS or the store raise (guarded)."""
        views = await self._oms.list_orders(runner.execution_id)
        await self._engine.act(runner, lambda s: _apply_and_resubmit(s, views))
        if not self._book.is_current(runner) or runner.model.working_orders():
            return
        remote = await self._oms.get_positions(runner.execution_id)
        await self._engine.act(runner, lambda s: self._compare(s, remote))

    def _compare(self, step: Step, remote: Mapping[str, Decimal]) -> None:
        if step.model.working_orders():
            return  # something was sent meanwhile: compare next time
        local = {s: p.quantity for s, p in step.model.portfolio.positions.items()}
        unexplained = []
        for symbol in sorted(set(remote) | set(local)):
            diff = local.get(symbol, ZERO) - remote.get(symbol, ZERO)
            self._metrics.set_position_difference(str(step.execution_id), symbol, diff)
            if diff != 0:
                unexplained.append(f"{symbol} {diff:+}")
        risk = step.model.risk
        if unexplained:
            step.anomaly(f"{_POSITIONS_DIFFER}: " + ", ".join(unexplained))
        elif risk.reducing and risk.reducing_reason.startswith(_POSITIONS_DIFFER):
            risk.leave_reducing("a clean reconciliation: positions agree with the OMS")
            step.drain_risk_state()

    async def cycle(self) -> None:
        """Every reconcile_interval: each running execution, each under its guard."""
        for runner in self._book.running():
            await self._supervisor.guard(runner, self.reconcile(runner))

    async def probe(self) -> None:
        """Ping the OMS; when it answers after it did not, retry unsent orders now."""
        up = await self._oms.ping()
        if up and not self._oms_up:
            _log.info("the OMS answers again; unsent orders are retried now")
            self._oms_back.set()
            self._oms_back = asyncio.Event()
        self._oms_up = up

    def retry_unsent(self, runner: ExecutionRunner) -> None:
        """Orders could not be sent: ask the OMS again with capped backoff until it answers.
        Asked again while retrying (a resend held back in turn), the retry goes on."""
        if runner.execution_id in self._retrying:
            self._again.add(runner.execution_id)
            return
        self._retrying.add(runner.execution_id)

        async def run() -> None:
            try:
                attempt = 0
                while self._book.is_current(runner) and not self._supervisor.stopping:
                    back = self._oms_back
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(_RETRY_CAP_S, _RETRY_BASE_S * 2**attempt)):
                            await back.wait()
                    attempt += 1
                    try:
                        await self.reconcile(runner)
                    except StoreError as exc:
                        if not exc.retryable:
                            raise
                        continue
                    except Exception as exc:
                        if getattr(exc, "retryable", False):
                            continue
                        raise
                    if runner.execution_id not in self._again:
                        return
                    self._again.discard(runner.execution_id)
            finally:
                self._retrying.discard(runner.execution_id)
                self._again.discard(runner.execution_id)

        async def guarded() -> None:
            await self._supervisor.guard(runner, run())

        if self._supervisor.spawn(guarded(), "retry-unsent") is None:
            self._retrying.discard(runner.execution_id)

    # ------------------------------------------------------------------ the report stream

    async def pump(self) -> None:
        """Execution reports from the OMS stream, applied per batch in one commit."""
        attempt = 0
        while True:  # the cursor is read once; a store outage at start is waited out
            try:
                cursor = await self._store.get_report_cursor(self._cursor)
                break
            except StoreError as exc:
                if not exc.retryable:
                    raise
                attempt += 1
                await self._sleep(min(_RETRY_CAP_S, _RETRY_BASE_S * 2**attempt))
        queue: asyncio.Queue[ExecutionReport] = asyncio.Queue()

        async def pull() -> None:
            async for report in self._oms.reports(from_seq=cursor):
                await queue.put(report)

        puller = asyncio.create_task(pull(), name="oms-reports-pull")
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < 1000:
                    batch.append(queue.get_nowait())
                await self.apply_reports(batch)
        finally:
            puller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await puller
            with contextlib.suppress(StoreError):
                await asyncio.shield(self._write_cursor())

    async def apply_reports(self, batch: list[ExecutionReport]) -> None:
        """One commit for the batch (reports of executions not driven here are skipped:
        their owner reads the same stream), the cursor in it."""
        grouped: dict[uuid.UUID, list[ExecutionReport]] = {}
        for report in batch:
            grouped.setdefault(report.execution_id, []).append(report)
        runners = [r for r in (self._book.get(e) for e in grouped) if r is not None and not r.dirty]
        self._seq_seen = batch[-1].seq
        due = self._monotonic() - self._written_at >= CURSOR_EVERY_S
        cursor = (self._cursor, self._seq_seen) if due else None
        try:
            if runners:
                await self._engine.act_many(
                    runners,
                    lambda s: s.apply_reports(grouped[s.execution_id]),
                    cursor=cursor,
                )
                if cursor is not None:
                    self._cursor_written(cursor[1])
            elif due:
                await self._write_cursor()
        except StoreError as exc:
            if not exc.retryable:
                raise
            # The executions are dirty and will be reloaded (and reconciled): nothing lost.
            _log.warning("reports not recorded; executions will be reloaded", error=str(exc))

    def _cursor_written(self, seq: int) -> None:
        self._seq_written = seq
        self._written_at = self._monotonic()

    async def _write_cursor(self) -> None:
        seq = self._seq_seen
        if seq is None or seq == self._seq_written:
            return
        await self._store.set_report_cursor(self._cursor, seq)
        self._cursor_written(seq)


def _apply_and_resubmit(step: Step, views: list[OmsOrder]) -> None:
    step.apply_views(views)
    known = {v.client_order_id for v in views}
    unseen = [
        o.client_order_id
        for o in step.model.live_orders()
        if o.client_order_id not in known and not o.oms_order_id and o.status is OrderStatus.PENDING
    ]
    if unseen:
        _log.info("orders the OMS never saw: checked again", orders=len(unseen))
        rules.resubmit_unseen(step, unseen)
    protection.reconciled(step, views)


ReconcileFn = Callable[[ExecutionRunner], Awaitable[None]]
