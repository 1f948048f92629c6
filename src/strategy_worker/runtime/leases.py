"""Ownership: renewing leases, taking executions over, and reloading dirty ones.

- `cycle()` (every `execution.heartbeat`): renew what this worker holds (drop what it lost),
  take over unowned or expired executions, apply control requests left for their owner.
- `resume(records)`: rebuild runners from the store (`restore.runner_from`), drive them,
  reconcile each with the OMS, and finish a stop a previous owner began.
- `reload_dirty()` (every 0.5 s while any is dirty): a runner whose commit outcome is
  unknown is rebuilt from the store as soon as the store answers, whatever else happens.
  While the store is unreachable, nothing is renewed either: after `lease_seconds` another
  worker that reaches the store takes the executions over.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

from strategy_worker.domain.clock import Clock
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.engine import Engine
from strategy_worker.runtime.protection import ProtectionDesk
from strategy_worker.runtime.restore import runner_from
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.runtime.supervisor import Supervisor
from strategy_worker.store import ExecutionRecord, JsonObject, LoadedExecution, Store

_log = get_logger(__name__)


class LeaseKeeper:
    """Leases, takeovers and reloads of one worker."""

    def __init__(
        self,
        *,
        settings: RuntimeSettings,
        store: Store,
        book: ExecutionBook,
        engine: Engine,
        supervisor: Supervisor,
        clock: Clock,
        metrics: WorkerMetrics,
        reconcile: Callable[[ExecutionRunner], Awaitable[None]],
        after_cycle: Callable[[], None],
        protection: ProtectionDesk | None = None,
        check: Callable[[list[ExecutionRunner]], Awaitable[object]] | None = None,
    ) -> None:
        self._protection = protection
        self._check = check
        self._settings = settings
        self._store = store
        self._book = book
        self._engine = engine
        self._supervisor = supervisor
        self._clock = clock
        self._metrics = metrics
        self._reconcile = reconcile
        self._after_cycle = after_cycle
        self._reclaimed = False

    async def cycle(self) -> None:
        """Heartbeat: renew, drop what was lost, take over what is free (with `reclaim`
        until a first acquisition succeeded: a previous process under our id is gone)."""
        owned = self._book.ids()
        if owned:
            held = await self._store.renew_leases(
                self._settings.owner_id, owned, lease_seconds=self._settings.lease_seconds
            )
            for execution_id in set(owned) - held:
                runner = self._book.get(execution_id)
                if runner is not None:
                    _log.warning("lease lost", execution_id=str(execution_id))
                    await self._book.remove(runner, release=False)
        await self.acquire(reclaim=not self._reclaimed)
        self._after_cycle()

    async def acquire(self, *, reclaim: bool = False) -> None:
        """Take over unowned or expired executions (with `reclaim`, also those a previous
        process under the same owner id held) and resume them."""
        if self._supervisor.stopping:
            return
        limit = self._settings.max_executions - len(self._book)
        if limit <= 0:
            return
        records = await self._store.acquire_executions(
            self._settings.owner_id,
            lease_seconds=self._settings.lease_seconds,
            limit=limit,
            reclaim=reclaim,
        )
        self._reclaimed = self._reclaimed or reclaim
        if records:
            await self.resume(records)

    async def resume(self, records: Sequence[ExecutionRecord]) -> None:
        """Drive these executions from their stored state; reconcile each with the OMS."""
        ids = [r.execution_id for r in records]
        loaded = await self._store.load_executions(ids)
        states = await self._store.load_protection(ids)
        for item in loaded:
            if item.record.owner_id != self._settings.owner_id:
                continue  # taken by another worker between the two reads
            runner = self._runner(item, states)
            self._book.add(runner)
            _log.info(
                "execution resumed",
                execution_id=str(runner.execution_id),
                open_orders=len(runner.model.live_orders()),
                stopping=runner.model.stopping,
            )
            self._supervisor.spawn(self._settle(runner), f"resume-{runner.execution_id}")

    async def _settle(self, runner: ExecutionRunner) -> None:
        """A resumed execution: reconcile first (missed fills, unseen orders), then let a
        step settle it (a previous owner's stop continues from its durable plan, the
        protection book is re-armed), then a look at the marks (a stop or trigger level
        passed while nobody watched acts now, not at the next monitor cycle)."""
        await self._supervisor.guard(runner, self._reconcile(runner))
        if any(
            o.status is OrderStatus.PENDING and not o.oms_order_id
            for o in runner.model.live_orders()
        ):
            self._engine.on_unsent(runner)  # the OMS could not be asked: retried with backoff
        await self._supervisor.guard(runner, self._engine.act(runner, lambda s: None))
        self._engine.arm_protection(runner)  # a back-off or grace the previous owner began
        if self._check is not None:
            await self._supervisor.guard(runner, self._check([runner]))

    def _runner(
        self, item: LoadedExecution, states: Mapping[uuid.UUID, JsonObject]
    ) -> ExecutionRunner:
        return runner_from(
            item,
            worker_limits=self._settings.limits,
            clock=self._clock,
            protection=self._protection,
            protection_state=states.get(item.record.execution_id),
        )

    async def reload_dirty(self) -> None:
        """Rebuild dirty runners from the store as soon as it answers."""
        dirty = self._book.dirty()
        self._metrics.executions_dirty.set(len(dirty))
        if not dirty:
            return
        try:
            ids = [r.execution_id for r in dirty]
            loaded = await self._store.load_executions(ids)
            states = await self._store.load_protection(ids)
        except StoreError as exc:
            if not exc.retryable:
                raise
            return  # still unreachable: the next round tries again
        by_id = {item.record.execution_id: item for item in loaded}
        for old in dirty:
            item = by_id.get(old.execution_id)
            record = item.record if item else None
            if item is None or record is None or record.fence != old.fence:
                _log.warning(
                    "execution no longer ours after reload", execution_id=str(old.execution_id)
                )
                await self._book.remove(old, release=False)
                continue
            if not record.state.status.is_running:
                await self._book.remove(old, release=False)  # it ended with that commit
                continue
            new = self._runner(item, states)
            new.marks.update(old.marks)
            new.mark_times.update(old.mark_times)
            async with old.lock:
                replaced = self._book.replace(old, new)
            if replaced:
                _log.info("execution reloaded", execution_id=str(new.execution_id))
                self._supervisor.spawn(self._settle(new), f"reload-{new.execution_id}")
        self._metrics.executions_dirty.set(len(self._book.dirty()))
