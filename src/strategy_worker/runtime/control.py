"""Control requests of running executions: stop, pause, resume.

Any worker of the consumer group may receive a request: it is recorded first (once per
request id, so a replay never acts twice), then applied by the worker driving the execution,
at once when that is this one, else by the owner's next lease cycle. A request whose user is
not the execution's owner is refused with a CRITICAL risk event.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from strategy_worker import messages as msg
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import Outbox
from strategy_worker.store import ControlOutcome, ControlRequestRecord, RiskEventRecord, Severity

if TYPE_CHECKING:
    from strategy_worker.runtime.worker import Worker

_log = get_logger(__name__)


class ControlDesk:
    """Records and applies one worker's control requests, one at a time."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._lock = asyncio.Lock()
        self._busy = False

    async def handle(self, payload: bytes, source: str) -> None:
        """stop / pause / resume, once per request id, only from the execution's owner.

        Any worker of the consumer group may receive a request: it is recorded first, then
        applied by the worker driving the execution (at once when that is this one, else
        by the owner's next lease cycle through `apply_pending`)."""
        request = msg.parse_control(payload)
        if isinstance(request, msg.Rejection):
            await self._w.reject(payload, str(request.code), str(request), source)
            return
        runner = self._find(request.execution_id, request.strategy_id)
        execution_id = runner.execution_id if runner else request.execution_id
        details: dict[str, str] = {"source": source, "reason": request.reason or ""}
        if request.strategy_id is not None:
            details["strategy_id"] = str(request.strategy_id)
        record = ControlRequestRecord(
            request_id=str(request.request_id),
            execution_id=execution_id,
            requested_by=str(request.user_id),
            action=str(request.action),
            received_at=self._w.clock.now(),
            payload=details,
        )
        if not await self._w.store.record_control_request(record):
            seen = await self._w.store.get_control_request(record.request_id)
            if seen is not None and seen.outcome is not ControlOutcome.RECEIVED:
                _log.info("control request replay ignored", request_id=record.request_id)
                return
        if runner is not None:
            await self.apply_pending([runner])
            return
        if execution_id is not None:
            stored = await self._w.store.get_execution(execution_id)
            if stored is None or not stored.state.status.is_running:
                await self._complete(record, ControlOutcome.REFUSED, "no running execution")
                return
        _log.info(
            "control request left for the execution's owner",
            request_id=record.request_id,
            execution_id=str(execution_id) if execution_id else None,
        )

    async def apply_pending(self, runners: list[ExecutionRunner] | None = None) -> None:
        """Apply the RECEIVED control requests of executions this worker drives, oldest
        first; one at a time, so a request consumed twice (here and by a lease cycle, or
        replayed) is acted on once: an applied request is no longer RECEIVED."""
        async with self._lock:
            chosen = list(self._w.runners.values()) if runners is None else runners
            if not chosen:
                return
            pending = await self._w.store.list_pending_control_requests(
                [r.execution_id for r in chosen],
                strategy_ids=sorted({r.info.strategy_id for r in chosen}),
            )
            for record in pending:
                if record.execution_id is not None:
                    runner = self._w.runners.get(record.execution_id)
                else:
                    runner = self._find(None, uuid.UUID(str(record.payload.get("strategy_id"))))
                if runner is not None:
                    await self._w.guard(runner, self._apply(runner, record))

    def spawn_pending(self) -> None:
        """Apply pending requests in the background: a stop waits for its closing fills,
        which must never hold up the lease heartbeat."""
        if self._busy or self._w.stopping:
            return
        self._busy = True

        async def run() -> None:
            try:
                await self.apply_pending()
            except StoreError as exc:
                _log.warning("pending control requests not applied yet", error=str(exc))
            finally:
                self._busy = False

        self._w.spawn(run(), "pending-controls")

    async def _apply(self, runner: ExecutionRunner, record: ControlRequestRecord) -> None:
        request_id = uuid.UUID(record.request_id)
        if record.requested_by != str(runner.info.user_id):
            out = Outbox()
            out.risk_rows.append(
                RiskEventRecord(
                    event_id=uuid.uuid5(request_id, "unauthorized"),
                    execution_id=runner.execution_id,
                    event_type="UNAUTHORIZED_CONTROL",
                    severity=Severity.CRITICAL,
                    description=(
                        f"{record.action} requested by {record.requested_by}, "
                        f"who does not own the execution"
                    ),
                    action_taken="request refused",
                    occurred_at=self._w.clock.now(),
                    details={"request_id": record.request_id},
                )
            )
            self._w.metrics.record_risk_event("UNAUTHORIZED_CONTROL", "CRITICAL")
            await runner.flush(out)
            await self._complete(record, ControlOutcome.REFUSED, "requester is not the owner")
            return
        action = msg.ControlAction(record.action)
        reason = str(record.payload.get("reason") or "") or f"{action} requested"
        if action is msg.ControlAction.STOP:
            await self._w.stop_execution(runner, reason=reason, request_id=request_id)
        else:
            await self._w.set_paused(runner, action is msg.ControlAction.PAUSE, reason, request_id)
        await self._complete(record, ControlOutcome.APPLIED, reason)

    async def _complete(
        self, record: ControlRequestRecord, outcome: ControlOutcome, detail: str
    ) -> None:
        await self._w.store.complete_control_request(
            record.request_id, outcome, detail=detail, completed_at=self._w.clock.now()
        )

    def _find(
        self, execution_id: uuid.UUID | None, strategy_id: uuid.UUID | None
    ) -> ExecutionRunner | None:
        if execution_id is not None:
            return self._w.runners.get(execution_id)
        for runner in self._w.runners.values():
            if runner.info.strategy_id == strategy_id and runner.running:
                return runner
        return None
