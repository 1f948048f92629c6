"""Coordination between workers and with the outside, in PostgreSQL: execution leases
(owner, epoch, expiry; takeover with FOR UPDATE SKIP LOCKED), control requests recorded once
per request id, and the OMS report cursor."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.adapters.postgres.base import StoreBase
from strategy_worker.errors import StoreError
from strategy_worker.store import (
    ControlOutcome,
    ControlRequestRecord,
    ExecutionRecord,
    ExecutionStatus,
)

_RUNNING = [s.value for s in ExecutionStatus if s.is_running]


class CoordinationQueries(StoreBase):
    """Leases, control requests and the report cursor (part of `PostgresStore`)."""

    # --- leases -----------------------------------------------------------------------
    async def acquire_executions(
        self, owner_id: str, *, lease_seconds: float, limit: int, reclaim: bool = False
    ) -> list[ExecutionRecord]:
        """Take unowned or expired active/paused executions (FOR UPDATE SKIP LOCKED, so
        concurrent acquirers never get the same row); each gets a new lease epoch. With
        `reclaim`, also those still leased to `owner_id` (a restart under the same id)."""
        _check_lease(owner_id, lease_seconds)
        async with self._tx("acquire_executions") as conn:
            rows = await conn.fetch(
                Q.ACQUIRE_EXECUTIONS, owner_id, float(lease_seconds), _RUNNING, limit, reclaim
            )
        return [R.execution_from_row(r) for r in rows]

    async def renew_leases(
        self, owner_id: str, execution_ids: Collection[uuid.UUID], *, lease_seconds: float
    ) -> set[uuid.UUID]:
        """Extend the leases still held by `owner_id`; the missing ids were taken over."""
        _check_lease(owner_id, lease_seconds)
        async with self._tx("renew_leases") as conn:
            rows = await conn.fetch(
                Q.RENEW_LEASES,
                owner_id,
                list(execution_ids),
                float(lease_seconds),
            )
        return {r["execution_id"] for r in rows}

    async def release_executions(
        self, owner_id: str, execution_ids: Collection[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Give leases up so another worker can take over at once (epoch is kept)."""
        async with self._tx("release_executions") as conn:
            rows = await conn.fetch(
                Q.RELEASE_EXECUTIONS,
                owner_id,
                list(execution_ids),
            )
        return {r["execution_id"] for r in rows}

    # --- control requests and report cursor ---------------------------------------------
    async def record_control_request(self, request: ControlRequestRecord) -> bool:
        """Insert once on request_id; False when the request was already seen."""
        async with self._tx("record_control_request") as conn:
            inserted = await conn.fetchval(
                Q.INSERT_CONTROL_REQUEST,
                request.request_id,
                request.execution_id,
                request.requested_by,
                request.action,
                request.payload,
                request.outcome.value,
                request.detail,
                request.received_at,
                request.completed_at,
            )
        return inserted is not None

    async def complete_control_request(
        self, request_id: str, outcome: ControlOutcome, *, detail: str, completed_at: datetime
    ) -> None:
        """Record the outcome of a request; StoreError if it was never recorded."""
        async with self._tx("complete_control_request") as conn:
            done = await conn.fetchval(
                Q.COMPLETE_CONTROL_REQUEST,
                request_id,
                outcome.value,
                detail,
                completed_at,
            )
        if done is None:
            raise StoreError(f"control request {request_id!r} was never recorded")

    async def get_control_request(self, request_id: str) -> ControlRequestRecord | None:
        """A recorded control request, or None."""
        async with self._conn("get_control_request") as conn:
            row = await conn.fetchrow(Q.GET_CONTROL_REQUEST, request_id)
        return None if row is None else R.control_from_row(row)

    async def list_pending_control_requests(
        self, execution_ids: Collection[uuid.UUID], *, strategy_ids: Collection[uuid.UUID] = ()
    ) -> list[ControlRequestRecord]:
        """RECEIVED requests for these executions (or strategies), oldest first."""
        if not execution_ids and not strategy_ids:
            return []
        async with self._conn("list_pending_control_requests") as conn:
            rows = await conn.fetch(
                Q.LIST_PENDING_CONTROL_REQUESTS,
                list(execution_ids),
                [str(s) for s in strategy_ids],
            )
        return [R.control_from_row(r) for r in rows]

    async def get_report_cursor(self, name: str) -> int:
        """The last report seq recorded for stream `name`; 0 when none."""
        async with self._conn("get_report_cursor") as conn:
            value = await conn.fetchval(Q.GET_REPORT_CURSOR, name)
        return 0 if value is None else int(value)

    async def set_report_cursor(self, name: str, last_seq: int) -> None:
        """Advance the cursor; a lower seq leaves it where it is."""
        async with self._conn("set_report_cursor") as conn:
            await conn.execute(Q.SET_REPORT_CURSOR, name, last_seq)


def _check_lease(owner_id: str, lease_seconds: float) -> None:
    if not owner_id:
        raise ValueError("owner_id must not be empty")
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
