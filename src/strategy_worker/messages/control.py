"""`strategy.control` requests and their parser, which never raises.

Actions: stop / pause / resume (every worker), and the operator kill switch's
`reduce_only` / `clear_reduce_only` (`KILL_SWITCH_ACTIONS`), which a worker accepts only when
it passes them in `parse_control(..., actions=ALL_ACTIONS)`: a worker that does not
implement them dead-letters them instead of mistaking them for another action.

`control_token` (optional, additive) is the signed identity of the request: a compact JWS
from the API binding request id, target, action and user (`strategy_worker.auth.control`).
Messages without it parse as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from strategy_worker.messages.jsonwire import (
    InputRejected,
    RejectCode,
    Rejection,
    isoformat_z,
    parse_json_object,
)

CONTROL_TYPE = "strategy.control"
MAX_CONTROL_BYTES = 16 * 1024
MAX_REASON_CHARS = 500
MAX_CONTROL_TOKEN_CHARS = 4096


# --------------------------------------------------------------------------- control


class ControlAction(StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    #: Kill switch: trading state REDUCING (only sells pass) until cleared.
    REDUCE_ONLY = "reduce_only"
    #: Lifts an operator's REDUCE_ONLY (back to ACTIVE unless HALTED or still reducing
    #: for another reason, e.g. a reconciliation mismatch).
    CLEAR_REDUCE_ONLY = "clear_reduce_only"


#: What every worker implements (and the parser's default).
BASIC_ACTIONS = frozenset({ControlAction.STOP, ControlAction.PAUSE, ControlAction.RESUME})
KILL_SWITCH_ACTIONS = frozenset({ControlAction.REDUCE_ONLY, ControlAction.CLEAR_REDUCE_ONLY})
ALL_ACTIONS = BASIC_ACTIONS | KILL_SWITCH_ACTIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRequest:
    """A stop/pause/resume request for one execution (by execution id or strategy id).

    `request_id` makes it idempotent: a replayed request is recognised and not acted on
    twice. The runtime refuses it unless `user_id` owns the execution.
    """

    request_id: uuid.UUID
    user_id: uuid.UUID
    action: ControlAction
    timestamp: datetime
    execution_id: uuid.UUID | None = None
    strategy_id: uuid.UUID | None = None
    reason: str | None = None
    #: The signed identity (compact JWS) or None for an unsigned request.
    control_token: str | None = None


_CONTROL_FIELDS = frozenset(
    {
        "type",
        "request_id",
        "execution_id",
        "strategy_id",
        "user_id",
        "action",
        "timestamp",
        "reason",
        "control_token",
    }
)


def parse_control(
    payload: bytes | str, *, actions: frozenset[ControlAction] = BASIC_ACTIONS
) -> ControlRequest | Rejection:
    """Parse a `strategy.control` message; any input gives a value, never an exception.

    `actions` is what the caller implements; any other action is rejected
    (`invalid_value` at `action`)."""
    data = parse_json_object(payload, max_bytes=MAX_CONTROL_BYTES)
    if isinstance(data, Rejection):
        return data
    try:
        return _control_from(data, actions)
    except InputRejected as exc:
        return exc.rejection


def _control_from(data: dict[str, Any], actions: frozenset[ControlAction]) -> ControlRequest:
    unknown = sorted(set(data) - _CONTROL_FIELDS)
    if unknown:
        raise InputRejected(Rejection(RejectCode.UNKNOWN_FIELD, unknown[0], "unknown field"))
    message_type = _required_str(data, "type")
    if message_type != CONTROL_TYPE:
        raise InputRejected(
            Rejection(RejectCode.INVALID_VALUE, "type", f"must be {CONTROL_TYPE!r}")
        )
    execution_id = _optional_uuid(data, "execution_id")
    strategy_id = _optional_uuid(data, "strategy_id")
    if (execution_id is None) == (strategy_id is None):
        raise InputRejected(
            Rejection(
                RejectCode.MISSING_FIELD if execution_id is None else RejectCode.INVALID_VALUE,
                "execution_id",
                "exactly one of execution_id or strategy_id is required",
            )
        )
    action_text = _required_str(data, "action")
    action = next((a for a in actions if a.value == action_text), None)
    if action is None:
        allowed = ", ".join(sorted(a.value for a in actions))
        raise InputRejected(Rejection(RejectCode.INVALID_VALUE, "action", f"must be {allowed}"))
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InputRejected(Rejection(RejectCode.INVALID_TYPE, "reason", "must be a string"))
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise InputRejected(
            Rejection(RejectCode.INVALID_VALUE, "reason", f"longer than {MAX_REASON_CHARS}")
        )
    token = data.get("control_token")
    if token is not None and not isinstance(token, str):
        raise InputRejected(Rejection(RejectCode.INVALID_TYPE, "control_token", "must be a string"))
    if token is not None and not 0 < len(token) <= MAX_CONTROL_TOKEN_CHARS:
        raise InputRejected(
            Rejection(
                RejectCode.INVALID_VALUE,
                "control_token",
                f"must be 1 to {MAX_CONTROL_TOKEN_CHARS} characters",
            )
        )
    return ControlRequest(
        request_id=_required_uuid(data, "request_id"),
        user_id=_required_uuid(data, "user_id"),
        action=action,
        timestamp=_required_timestamp(data, "timestamp"),
        execution_id=execution_id,
        strategy_id=strategy_id,
        reason=reason,
        control_token=token,
    )


def _required_str(data: Mapping[str, Any], field: str) -> str:
    if field not in data or data[field] is None:
        raise InputRejected(Rejection(RejectCode.MISSING_FIELD, field, "required"))
    value = data[field]
    if not isinstance(value, str):
        raise InputRejected(Rejection(RejectCode.INVALID_TYPE, field, "must be a string"))
    return value


def _optional_uuid(data: Mapping[str, Any], field: str) -> uuid.UUID | None:
    if data.get(field) is None:
        return None
    return _required_uuid(data, field)


def _required_uuid(data: Mapping[str, Any], field: str) -> uuid.UUID:
    text = _required_str(data, field)
    try:
        value = uuid.UUID(text)
    except ValueError:
        value = None
    # Only the canonical 36-character form: no braces, URNs or bare hex.
    if value is None or str(value) != text.lower():
        raise InputRejected(Rejection(RejectCode.INVALID_VALUE, field, "must be a UUID"))
    return value


def _required_timestamp(data: Mapping[str, Any], field: str) -> datetime:
    text = _required_str(data, field)
    try:
        value = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or "T" not in text:
        raise InputRejected(
            Rejection(RejectCode.INVALID_VALUE, field, "must be ISO-8601 with a time zone")
        )
    return value.astimezone(UTC)


def control_message(request: ControlRequest) -> dict[str, object]:
    """The wire form of a control request (for operator tools and tests)."""
    message: dict[str, object] = {"type": CONTROL_TYPE, "request_id": str(request.request_id)}
    if request.execution_id is not None:
        message["execution_id"] = str(request.execution_id)
    if request.strategy_id is not None:
        message["strategy_id"] = str(request.strategy_id)
    message.update(
        user_id=str(request.user_id),
        action=str(request.action),
        timestamp=isoformat_z(request.timestamp),
    )
    if request.reason is not None:
        message["reason"] = request.reason
    if request.control_token is not None:
        message["control_token"] = request.control_token
    return message
