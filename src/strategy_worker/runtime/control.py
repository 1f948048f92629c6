"""Control requests of running executions: stop, pause, resume, and the operators' kill
switch (reduce_only, clear_reduce_only).

Any worker of the consumer group may receive a request: its identity is verified at once
(`auth.ControlVerifier`: the API's signed token; unsigned requests are refused wherever
signatures are required, the default outside development), and it is recorded (once per
request id, so a replay never acts twice) with who sent it, or why it is refused. The worker
driving the execution then applies it in one step whose commit also records the outcome: at
once when that is this worker, else at the owner's next lease cycle. A request that is not
from the execution's owner (or an operator) is refused with a CRITICAL
`UNAUTHORIZED_CONTROL` risk event, in the same commit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

from strategy_worker import messages as msg
from strategy_worker.auth import ControlRefusal, ControlVerifier, Role
from strategy_worker.domain.clock import Clock
from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.runtime import decide as rules
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.engine import Engine
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.step import Step
from strategy_worker.runtime.supervisor import Supervisor
from strategy_worker.store import (
    ControlCompletion,
    ControlOutcome,
    ControlRequestRecord,
    ExecutionStatus,
    Store,
)

_log = get_logger(__name__)

Reject = Callable[[bytes, str, str, str], Awaitable[None]]


class ControlDesk:
    """Records and applies one worker's control requests, one at a time."""

    def __init__(
        self,
        *,
        store: Store,
        book: ExecutionBook,
        engine: Engine,
        supervisor: Supervisor,
        clock: Clock,
        token_clock: Clock,
        reject: Reject,
        verifier: ControlVerifier,
    ) -> None:
        self._verifier = verifier
        self._token_clock = token_clock
        self._store = store
        self._book = book
        self._engine = engine
        self._supervisor = supervisor
        self._clock = clock
        self._reject = reject
        self._lock = asyncio.Lock()
        self._busy = False

    async def handle(self, payload: bytes, source: str) -> None:
        """One `strategy.control` message; returns once it is recorded (and applied here
        when this worker drives the execution)."""
        request = msg.parse_control(payload, actions=msg.ALL_ACTIONS)
        if isinstance(request, msg.Rejection):
            await self._reject(payload, str(request.code), str(request), source)
            return
        runner = self._find(request.execution_id, request.strategy_id)
        execution_id = runner.execution_id if runner else request.execution_id
        info: dict[str, str] = {"source": source, "reason": request.reason or ""}
        if request.strategy_id is not None:
            info["strategy_id"] = str(request.strategy_id)
        identity = self._verifier.verify(request, now=self._token_clock.now())
        if isinstance(identity, ControlRefusal):
            info |= {"refused": str(identity.code), "refusal": identity.detail}
        else:
            info |= {"via": identity.via, "role": str(identity.role)}
        record = ControlRequestRecord(
            request_id=str(request.request_id),
            execution_id=execution_id,
            requested_by=str(request.user_id),
            action=str(request.action),
            received_at=self._clock.now(),
            payload=info,
        )
        if not await self._store.record_control_request(record):
            seen = await self._store.get_control_request(record.request_id)
            if seen is not None and seen.outcome is not ControlOutcome.RECEIVED:
                _log.info("control request replay ignored", request_id=record.request_id)
                return
        if runner is not None:
            await self.apply_pending([runner])
            return
        if execution_id is not None:
            stored = await self._store.get_execution(execution_id)
            if stored is None or not stored.state.status.is_running:
                await self._complete(record, ControlOutcome.REFUSED, "no running execution")
                return
        _log.info(
            "control request left for the execution's owner",
            request_id=record.request_id,
            execution_id=str(execution_id) if execution_id else None,
        )

    async def apply_pending(self, runners: Sequence[ExecutionRunner] | None = None) -> None:
        """Apply the RECEIVED requests of executions this worker drives, oldest first, one
        at a time: an applied request is no longer RECEIVED, so a request seen twice (here
        and by a lease cycle, or replayed) acts once."""
        async with self._lock:
            chosen = list(self._book) if runners is None else list(runners)
            if not chosen:
                return
            pending = await self._store.list_pending_control_requests(
                [r.execution_id for r in chosen],
                strategy_ids=sorted({r.info.strategy_id for r in chosen}),
            )
            for record in pending:
                if record.execution_id is not None:
                    runner = self._book.get(record.execution_id)
                else:
                    runner = self._find(None, uuid.UUID(str(record.payload.get("strategy_id"))))
                if runner is not None:
                    await self._supervisor.guard(runner, self._apply(runner, record))

    def spawn_pending(self) -> None:
        """Apply pending requests in the background (never holding up the heartbeat)."""
        if self._busy:
            return
        self._busy = True

        async def run() -> None:
            try:
                await self.apply_pending()
            except StoreError as exc:
                _log.warning("pending control requests not applied yet", error=str(exc))
            finally:
                self._busy = False

        if self._supervisor.spawn(run(), "pending-controls") is None:
            self._busy = False

    async def _apply(self, runner: ExecutionRunner, record: ControlRequestRecord) -> None:
        now = self._clock.now()

        def decide(step: Step) -> None:
            outcome, detail = _control(step, record)
            step.controls.append(
                ControlCompletion(
                    request_id=record.request_id,
                    outcome=outcome,
                    detail=detail,
                    completed_at=now,
                )
            )

        await self._engine.act(runner, decide)

    async def _complete(
        self, record: ControlRequestRecord, outcome: ControlOutcome, detail: str
    ) -> None:
        await self._store.complete_control_request(
            record.request_id, outcome, detail=detail, completed_at=self._clock.now()
        )

    def _find(
        self, execution_id: uuid.UUID | None, strategy_id: uuid.UUID | None
    ) -> ExecutionRunner | None:
        if execution_id is not None:
            return self._book.get(execution_id)
        if strategy_id is not None:
            return self._book.for_strategy(strategy_id)
        return None


def _control(step: Step, record: ControlRequestRecord) -> tuple[ControlOutcome, str]:
    """Decide one control request; returns its outcome and detail."""
    request_id = uuid.UUID(record.request_id)
    refused = record.payload.get("refused")
    operator = record.payload.get("role") == str(Role.OPERATOR)
    owner = record.requested_by == str(step.info.user_id)
    if refused or not (owner or operator):
        why = (
            f"identity not verified ({refused}: {record.payload.get('refusal', '')})"
            if refused
            else f"requested by {record.requested_by}, who does not own the execution"
        )
        step.risk(
            RiskEvent(
                event_type=RiskEventType.UNAUTHORIZED_CONTROL,
                severity=Severity.CRITICAL,
                description=f"{record.action}: {why}",
                action_taken="request refused",
                details=details(
                    request_id=record.request_id, action=record.action, refusal=refused or ""
                ),
            )
        )
        return ControlOutcome.REFUSED, "refused: " + (str(refused) if refused else "not the owner")
    model = step.model
    action = msg.ControlAction(record.action)
    reason = str(record.payload.get("reason") or "") or f"{action} requested"
    if not model.running:
        return ControlOutcome.REFUSED, "the execution is not running"
    if action is msg.ControlAction.STOP:
        if model.plans.stop is not None:
            return ControlOutcome.APPLIED, "already stopping"
        rules.begin_stop(step, reason=reason, request_id=request_id)
        return ControlOutcome.APPLIED, reason
    if action in (msg.ControlAction.REDUCE_ONLY, msg.ControlAction.CLEAR_REDUCE_ONLY):
        # The kill switch also holds while stopping: it only ever narrows what may trade.
        risk = model.risk
        if action is msg.ControlAction.REDUCE_ONLY:
            risk.enter_operator_reducing(f"reduce-only by {record.requested_by}: {reason}")
        else:
            risk.leave_operator_reducing(f"reduce-only lifted by {record.requested_by}")
        step.touched = True
        step.drain_risk_state()
        return ControlOutcome.APPLIED, reason
    if model.plans.stop is not None:
        return ControlOutcome.REFUSED, "the execution is stopping"
    target = ExecutionStatus.PAUSED if action is msg.ControlAction.PAUSE else ExecutionStatus.ACTIVE
    if model.status is target:
        return ControlOutcome.APPLIED, f"already {target.value}"
    model.status = target
    step.touched = True
    build = msg.execution_paused if target is ExecutionStatus.PAUSED else msg.execution_resumed
    step.emit(build(step.runner.context, at=step.now, reason=reason, request_id=request_id))
    return ControlOutcome.APPLIED, reason
