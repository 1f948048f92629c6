"""Keeping an execution's view equal to the OMS's: the periodic reconciliation (orders,
missed fills, resubmission of what the OMS never saw, position comparison) and the pump of
execution reports from the OMS stream, resumed from a durable cursor after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import ExecutionReport
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import Outbox

if TYPE_CHECKING:
    from strategy_worker.runtime.worker import Worker

_log = get_logger(__name__)

CURSOR_EVERY_S = 0.5
"""How often the report cursor is written: it only shortens the replay after a restart
(reports apply idempotently: fills by id), so one write per pump batch was waste."""


class Reconciler:
    """Reconciliation and OMS reports for one worker's executions."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._cursor = f"oms-reports:{worker.settings.owner_id}"
        self._seq_seen: int | None = None
        self._seq_written: int | None = None
        self._written_at = 0.0

    async def reconcile(self, runner: ExecutionRunner) -> None:
        """Ask the OMS about every order of the execution: record fills we missed, resubmit
        (same client order id) only what the OMS has never heard of, and compare positions."""
        views = await self._w.oms.list_orders(runner.execution_id)
        known = {v.client_order_id for v in views}
        async with runner.lock:
            out = Outbox()
            await runner.apply_views(views, out)
            unknown = [
                o.intent
                for o in runner.open_orders
                if o.client_order_id not in known and not o.oms_order_id
            ]
            if unknown:
                _log.info("resubmitting orders the OMS never saw", orders=len(unknown))
                await runner.submit(unknown, out)
            if not runner.open_orders:
                await self._compare_positions(runner, out)
            await runner.flush(out)

    async def _compare_positions(self, runner: ExecutionRunner, out: Outbox) -> None:
        remote = await self._w.oms.get_positions(runner.execution_id)
        local = {s: p.quantity for s, p in runner.portfolio.positions.items()}
        unexplained = False
        for symbol in sorted(set(remote) | set(local)):
            diff = local.get(symbol, ZERO) - remote.get(symbol, ZERO)
            self._w.metrics.set_position_difference(str(runner.execution_id), symbol, diff)
            unexplained = unexplained or diff != 0
        if unexplained:
            runner.anomaly("local positions differ from the OMS's", out)

    async def cycle(self) -> None:
        """Reconcile every running execution, one at a time, each under its guard."""
        for runner in [r for r in self._w.runners.values() if r.running and not r.dirty]:
            await self._w.guard(runner, self.reconcile(runner))

    async def pump(self) -> None:
        """Execution reports from the OMS stream, applied per execution in batches."""
        cursor = await self._w.store.get_report_cursor(self._cursor)
        queue: asyncio.Queue[ExecutionReport] = asyncio.Queue()

        async def pull() -> None:
            async for report in self._w.oms.reports(from_seq=cursor):
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
        """Apply a batch per execution (fills exactly once by id), then advance the cursor."""
        grouped: dict[uuid.UUID, list[ExecutionReport]] = {}
        for report in batch:
            grouped.setdefault(report.execution_id, []).append(report)
        for execution_id, reports in grouped.items():
            runner = self._w.runners.get(execution_id)
            if runner is None or runner.dirty:
                continue
            if not runner.first_orders_answered.is_set():
                # The OMS reported on orders whose submit answer is still on its way: apply
                # the answer first, then these (they usually change nothing then).
                self._w.spawn(self._apply_after_answer(runner, reports), "reports-deferred")
                continue
            await self._w.guard(runner, self._apply_reports(runner, reports))
        self._seq_seen = batch[-1].seq
        if time.monotonic() - self._written_at >= CURSOR_EVERY_S:
            with contextlib.suppress(StoreError):
                await self._write_cursor()

    async def _apply_after_answer(
        self, runner: ExecutionRunner, reports: list[ExecutionReport]
    ) -> None:
        await runner.first_orders_answered.wait()
        if not runner.dirty and self._w.runners.get(runner.execution_id) is runner:
            await self._w.guard(runner, self._apply_reports(runner, reports))

    async def _write_cursor(self) -> None:
        seq = self._seq_seen
        if seq is None or seq == self._seq_written:
            return
        self._written_at = time.monotonic()
        await self._w.store.set_report_cursor(self._cursor, seq)
        self._seq_written = seq

    async def _apply_reports(self, runner: ExecutionRunner, reports: list[ExecutionReport]) -> None:
        async with runner.lock:
            out = Outbox()
            await runner.apply_reports(reports, out, cursor=None)
            await runner.flush(out)
