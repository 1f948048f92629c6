"""Control requests from the API to `strategy.control`: signed, and published once per id.

A client may retry a call with the same `request_id` (network failure, double click). The
API's own row in `api_control_requests` is inserted and locked in the transaction that
publishes, and marked published before it commits: a concurrent duplicate waits for that
lock and then finds the row published; a failed publish rolls the row back, so a retry
publishes again. The same id with another meaning (action, target, user) is a conflict.

Kill switch (operators): one request fans out to one control message per running
execution in scope (one user, or everyone), with request ids derived from the switch's
(uuid5), each signed like any other request. The worker applies them as usual.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.auth.control import ControlSigner
from strategy_worker.auth.tokens import Principal
from strategy_worker.messages.control import ControlAction, ControlRequest, control_message
from strategy_worker.messages.jsonwire import encode_json

Scope = Literal["execution", "user", "all"]


class ControlSink(Protocol):
    """Where control messages go: Kafka `strategy.control` in production; paper mode may
    hand them to its worker directly."""

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """(key, value) pairs, all acknowledged when this returns (else it raises)."""
        ...


class KafkaControlSink:
    """Publishes on the control topic through the project's idempotent producer."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        await self._producer.send_batch(self._topic, [(value, key, ()) for key, value in messages])


class DirectControlSink:
    """Hands each control message to a handler in the same process (paper mode: the
    worker's own control handling, e.g. `worker.handle_control(payload, source)`)."""

    def __init__(
        self, handle: Callable[[bytes, str], Awaitable[None]], *, source: str = "api"
    ) -> None:
        self._handle = handle
        self._source = source

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        for _key, value in messages:
            await self._handle(value, self._source)


class ControlConflict(Exception):
    """The request id was already used for another request."""


class ControlUnavailable(Exception):
    """No signing key or no sink: the API cannot publish control requests."""


@dataclass(frozen=True, slots=True)
class ControlOrder:
    """What a caller asked for."""

    request_id: uuid.UUID
    principal: Principal
    action: ControlAction
    scope: Scope
    execution_id: uuid.UUID | None = None
    target_user_id: uuid.UUID | None = None
    reason: str = ""

    def fingerprint(self) -> str:
        parts = [
            str(self.principal.user_id),
            str(self.action),
            self.scope,
            str(self.execution_id),
            str(self.target_user_id),
            self.reason,
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: uuid.UUID
    #: False when this call found the request already published (a retry).
    published_now: bool
    messages: int


_INSERT = """
INSERT INTO api_control_requests
    (request_id, requested_by, role, action, scope, execution_id, target_user_id, reason,
     fingerprint)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (request_id) DO NOTHING
"""
_LOCK = "SELECT * FROM api_control_requests WHERE request_id = $1 FOR UPDATE"
_MARK = "UPDATE api_control_requests SET published_at = $2, messages = $3 WHERE request_id = $1"
_RUNNING = """
SELECT execution_id FROM strategy_executions
WHERE status IN ('active', 'paused') AND ($1::uuid IS NULL OR user_id = $1)
ORDER BY execution_id
"""
_GET = "SELECT * FROM api_control_requests WHERE request_id = $1"
_OUTCOMES = """
SELECT request_id, execution_id, outcome, detail, received_at, completed_at
FROM control_requests WHERE request_id = ANY($1::text[])
"""


def message_request_id(order_id: uuid.UUID, execution_id: uuid.UUID, scope: Scope) -> uuid.UUID:
    """The request id of one execution's message: the order's own for an execution
    request, derived (uuid5) for a kill switch's fan-out."""
    return order_id if scope == "execution" else uuid.uuid5(order_id, str(execution_id))


class ControlPublisher:
    def __init__(
        self, pool: asyncpg.Pool, sink: ControlSink | None, signer: ControlSigner | None
    ) -> None:
        self._pool = pool
        self._sink = sink
        self._signer = signer

    @property
    def available(self) -> bool:
        return self._sink is not None and self._signer is not None

    async def submit(self, order: ControlOrder, *, now: datetime) -> Submitted:
        """Publish `order` once; a retry with the same id returns the first result."""
        sink, signer = self._sink, self._signer
        if sink is None or signer is None:
            raise ControlUnavailable(
                "no control signing key" if signer is None else "no control topic"
            )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _INSERT,
                order.request_id,
                order.principal.user_id,
                str(order.principal.role),
                str(order.action),
                order.scope,
                order.execution_id,
                order.target_user_id,
                order.reason,
                order.fingerprint(),
            )
            row = await conn.fetchrow(_LOCK, order.request_id)
            if row["fingerprint"] != order.fingerprint():
                raise ControlConflict(f"request_id {order.request_id} was used for another request")
            if row["published_at"] is not None:
                return Submitted(order.request_id, False, len(row["messages"]))
            if order.scope == "execution":
                assert order.execution_id is not None
                targets = [order.execution_id]
            else:
                user = order.target_user_id if order.scope == "user" else None
                targets = [r["execution_id"] for r in await conn.fetch(_RUNNING, user)]
            messages, listed = [], []
            for execution_id in targets:
                request = ControlRequest(
                    request_id=message_request_id(order.request_id, execution_id, order.scope),
                    user_id=order.principal.user_id,
                    action=order.action,
                    timestamp=now,
                    execution_id=execution_id,
                    reason=order.reason or None,
                )
                signed = signer.sign(request, role=order.principal.role, now=now)
                value = encode_json(control_message(signed)).encode()
                messages.append((str(execution_id).encode(), value))
                listed.append(
                    {"request_id": str(request.request_id), "execution_id": str(execution_id)}
                )
            if messages:
                await sink.publish(messages)
            await conn.execute(_MARK, order.request_id, now, listed)  # the pool codec encodes
        return Submitted(order.request_id, True, len(messages))

    async def status(self, request_id: uuid.UUID, principal: Principal) -> dict[str, Any] | None:
        """The request and each message's outcome at the worker; None when the caller may
        not see it (another user's) or it does not exist."""
        row = await self._pool.fetchrow(_GET, request_id)
        if row is None or not (principal.is_operator or row["requested_by"] == principal.user_id):
            return None
        listed = row["messages"]
        if isinstance(listed, str):
            listed = jsoncodec.loads(listed)
        ids = [m["request_id"] for m in listed]
        seen = {r["request_id"]: r for r in await self._pool.fetch(_OUTCOMES, ids)}
        outcomes = []
        for message in listed:
            worker = seen.get(message["request_id"])
            outcomes.append(
                {
                    "request_id": message["request_id"],
                    "execution_id": message["execution_id"],
                    "outcome": worker["outcome"] if worker else "PUBLISHED",
                    "detail": worker["detail"] if worker else "",
                    "completed_at": worker["completed_at"] if worker else None,
                }
            )
        return {
            "request_id": row["request_id"],
            "action": row["action"],
            "scope": row["scope"],
            "execution_id": row["execution_id"],
            "target_user_id": row["target_user_id"],
            "requested_by": row["requested_by"],
            "reason": row["reason"],
            "published_at": row["published_at"],
            "outcome": summary(outcomes),
            "messages": outcomes,
        }


def summary(outcomes: Sequence[dict[str, Any]]) -> str:
    """One word for the request: PENDING until every message is done, then APPLIED when all
    applied, REFUSED / FAILED when all alike, MIXED otherwise (NONE: nothing to act on)."""
    states = {o["outcome"] for o in outcomes}
    if not states:
        return "NONE"
    if states & {"PUBLISHED", "RECEIVED"}:
        return "PENDING"
    return states.pop() if len(states) == 1 else "MIXED"
