"""The worker's submission queue: the orders of every execution, sent in shared batches.

The engine hands over each committed step's orders (`put`, or `put_group` for orders the
OMS must accept atomically). Up to `in_flight` senders take whatever is queued, up to
`max_orders` orders at a time, and send it as ONE batch (`OmsGateway.submit_batch`: one
OrderBatch on the worker's one shared OMS stream where the OMS takes batches, its
per-order path otherwise); the answers of all the batch's executions are applied through
the order state machine in one step each and ONE commit (`act_many`). Nothing waits to
fill a batch: an order leaves as soon as a sender is free, so under light load a batch is
one execution's orders and under a backlog batches grow by themselves (what queued while
the others were in flight).

Guarantees (those of sending per execution, kept):
- only committed intents are queued: the engine calls `put` after the commit;
- the last check before an order leaves (`may_leave`: no buy of an execution that is no
  longer active, is stopping, not trading ACTIVE, or whose symbol is blocked; no sell that
  with the other working sells exceeds what is held) runs when the batch is cut, on the
  state committed at that moment; an order held back stays recorded and unsent, and its
  execution goes to reconciliation (`unsent`), which checks it again and cancels it with
  an event when it may still not leave. An order that is no longer waiting to be sent by
  then (cancelled locally, or already known to the OMS) is dropped from the batch: it has
  been dealt with;
- a batch that fails as a whole (the OMS unreachable, no answer) leaves every order of it
  recorded: each execution goes to reconciliation, which asks the OMS about each order
  before anything is sent again (resubmissions keep their client order ids);
- an entry the OMS refuses sends its execution to reconciliation as well; the answers of
  the other entries are applied.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from strategy_worker.domain.orders import OmsOrder, OrderIntent, OrderStatus
from strategy_worker.errors import OmsError, StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import OmsGateway, SubmitEntry, SubmitOutcome
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.step import Step

_log = get_logger(__name__)

MAX_ORDERS = 500
"""Orders per batch at most (the client splits further to the OMS's own maximum)."""
IN_FLIGHT = 4
"""Batches on their way at once (the client also keeps to the OMS's announced window)."""

ActMany = Callable[[Sequence[ExecutionRunner], Callable[[Step], object]], Awaitable[list[Step]]]
Spawn = Callable[[Coroutine[Any, Any, Any], str], object]
MayLeave = Callable[[ExecutionRunner, OrderIntent], bool]


@dataclass(slots=True)
class _Item:
    runner: ExecutionRunner
    intents: list[OrderIntent]
    group: bool


class SubmitQueue:
    """Per-worker submission queue (see the module docstring)."""

    def __init__(
        self,
        *,
        oms: OmsGateway,
        act_many: ActMany,
        unsent: Callable[[ExecutionRunner], None],
        may_leave: MayLeave,
        spawn: Spawn,
        metrics: WorkerMetrics,
        max_orders: int = MAX_ORDERS,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        if max_orders < 1 or in_flight < 1:
            raise ValueError("max_orders and in_flight must be at least 1")
        self._oms = oms
        self._act_many = act_many
        self._unsent = unsent
        self._may_leave = may_leave
        self._spawn = spawn
        self._metrics = metrics
        self._max_orders = max_orders
        self._in_flight = in_flight
        self._queue: deque[_Item] = deque()
        self._senders = 0
        self._starting = False
        """A sender was spawned and has not cut its first batch yet (it takes what
        arrives meanwhile: no second sender is needed for it)."""
        self.batches = 0
        """Batches sent so far (for the bench and tests)."""

    @property
    def queued(self) -> int:
        """Orders waiting for a sender."""
        return sum(len(item.intents) for item in self._queue)

    def put(self, runner: ExecutionRunner, intents: Sequence[OrderIntent]) -> None:
        """Committed intents of one execution, to be sent as soon as a sender is free."""
        if intents:
            self._queue.append(_Item(runner, list(intents), group=False))
            self._wake()

    def put_group(self, runner: ExecutionRunner, intents: Sequence[OrderIntent]) -> None:
        """Committed intents the OMS accepts all or none (a bracket): one entry, never
        split across batches, held back whole when any of it may not leave."""
        if intents:
            self._queue.append(_Item(runner, list(intents), group=True))
            self._wake()

    # ------------------------------------------------------------------ senders

    def _wake(self) -> None:
        if self._starting or self._senders >= self._in_flight or not self._queue:
            return
        self._starting = True
        self._senders += 1
        if self._spawn(self._sender(), "submit-batches") is None:
            # Shutting down: what is queued stays recorded for reconciliation (here by a
            # sender still running, else by the next owner).
            self._starting = False
            self._senders -= 1

    async def _sender(self) -> None:
        try:
            self._starting = False
            while True:
                batch = self._cut()
                if not batch:
                    return
                self._wake()  # more waits and a slot is free: another sender takes it
                await self._send(batch)
        finally:
            self._senders -= 1

    def _cut(self) -> list[_Item]:
        """Up to max_orders orders from the head of the queue, each checked now."""
        batch: list[_Item] = []
        size = 0
        queue = self._queue
        while queue and size < self._max_orders:
            item = queue[0]
            room = self._max_orders - size
            if item.group or len(item.intents) <= room:
                queue.popleft()
                taken = item
            else:  # a large step is split; its rest stays at the head
                taken = _Item(item.runner, item.intents[:room], group=False)
                del item.intents[:room]
            checked = self._checked(taken)
            if checked is not None:
                batch.append(checked)
                size += len(checked.intents)
        return batch

    def _checked(self, item: _Item) -> _Item | None:
        """The item with only the orders that may leave now (see the module docstring)."""
        runner = item.runner
        orders = runner.model.orders
        waiting = [
            i
            for i in item.intents
            if (o := orders.get(i.client_order_id)) is not None
            and o.status is OrderStatus.PENDING
            and not o.oms_order_id
        ]
        leaving = [i for i in waiting if self._may_leave(runner, i)]
        if len(leaving) != len(waiting):
            # The state changed since the commit (a halt, a pause, a stop): those buys
            # stay recorded, unsent; reconciliation cancels them with an event.
            self._unsent(runner)
            if item.group:
                return None
        if not leaving:
            return None
        return _Item(runner, leaving, item.group)

    async def _send(self, batch: list[_Item]) -> None:
        owners: list[ExecutionRunner] = []
        entries: list[SubmitEntry] = []
        for item in batch:
            account = item.runner.info.account_id
            if item.group:
                owners.append(item.runner)
                entries.append(SubmitEntry(tuple(item.intents), account, group=True))
            else:
                owners.extend(item.runner for _ in item.intents)
                entries.extend(SubmitEntry((i,), account) for i in item.intents)
        self.batches += 1
        started = time.perf_counter()
        try:
            outcomes = await self._oms.submit_batch(entries)
        except OmsError as exc:
            self._failed(batch, exc, retryable=exc.retryable)
            return
        except Exception as exc:  # never lose a batch to a bug: reconciliation finds it
            _log.error("order batch failed", orders=_count(batch), exc_info=exc)
            self._failed(batch, exc, retryable=False)
            return
        self._metrics.order_round_trip_seconds.observe(time.perf_counter() - started)
        await self._apply(batch, owners, outcomes)

    def _failed(self, batch: list[_Item], exc: BaseException, *, retryable: bool) -> None:
        runners = _runners(batch)
        _log.warning(
            "oms submit failed; orders stay recorded for reconciliation",
            executions=len(runners),
            orders=_count(batch),
            error=str(exc)[:200],
            retryable=retryable,
        )
        for runner in runners:
            self._unsent(runner)

    async def _apply(
        self,
        batch: list[_Item],
        owners: list[ExecutionRunner],
        outcomes: list[SubmitOutcome],
    ) -> None:
        """The answers of every execution of the batch, in one commit."""
        views: dict[uuid.UUID, list[OmsOrder]] = {}
        refused: dict[uuid.UUID, ExecutionRunner] = {}
        first_error: OmsError | None = None
        for owner, outcome in zip(owners, outcomes, strict=True):
            eid = owner.execution_id
            if outcome.error is not None:
                refused[eid] = owner
                first_error = first_error or outcome.error
            else:
                views.setdefault(eid, []).extend(outcome.orders)
        if refused:
            _log.warning(
                "oms refused orders; they stay recorded for reconciliation",
                executions=len(refused),
                error=str(first_error)[:200],
            )
        runners = [r for r in _runners(batch) if r.execution_id in views]
        if runners:
            try:
                await self._act_many(runners, lambda s: s.apply_views(views[s.execution_id]))
            except StrategyWorkerError as exc:
                # The commit's outcome is unknown: those executions are reloaded from the
                # store (dirty) and reconciled; nothing the OMS answered is lost with it.
                _log.warning(
                    "submit answers not recorded; executions will be reloaded",
                    executions=len(runners),
                    error=str(exc)[:200],
                    retryable=exc.retryable,
                )
            except Exception as exc:
                _log.error(
                    "submit answers not recorded; executions will be reloaded",
                    executions=len(runners),
                    exc_info=exc,
                )
        for runner in refused.values():
            self._unsent(runner)


def _runners(batch: Sequence[_Item]) -> list[ExecutionRunner]:
    seen: dict[uuid.UUID, ExecutionRunner] = {}
    for item in batch:
        seen.setdefault(item.runner.execution_id, item.runner)
    return list(seen.values())


def _count(batch: Sequence[_Item]) -> int:
    return sum(len(i.intents) for i in batch)
