"""Wire formats the worker speaks on Kafka (documented in docs/messages.md).

- `strategy.execution` events: plain dicts built here, encoded by `encode_json`, which writes
  every `Decimal` as a JSON *number* from its exact text (the spec's sample shows numbers:
  200, 175.50, 35100.00) and refuses floats, so no binary rounding ever reaches the wire.
- `strategy.control` requests (stop / pause / resume): `parse_control` turns any bytes into a
  `ControlRequest` or a `Rejection` (code + field path); it never raises.
- Dead-letter envelopes: `dead_letter_envelope` wraps a rejected payload with its reason.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from strategy_worker.domain.orders import Fill, OrderIntent, OrderStatus, Side

CONTROL_TYPE = "strategy.control"
DEAD_LETTER_TYPE = "strategy.dead_letter"
MAX_CONTROL_BYTES = 16 * 1024
MAX_REASON_CHARS = 500
MAX_DEAD_LETTER_PAYLOAD = 256 * 1024


class EventType(StrEnum):
    """Every `type` the worker publishes on `strategy.execution`."""

    STARTED = "strategy.execution.started"
    ORDER_SUBMITTED = "strategy.execution.order_submitted"
    ORDER_FILLED = "strategy.execution.order_filled"
    ORDER_REJECTED = "strategy.execution.order_rejected"
    RISK_EVENT = "strategy.execution.risk_event"
    STOP_LOSS_TRIGGERED = "strategy.execution.stop_loss_triggered"
    REBALANCED = "strategy.execution.rebalanced"
    PAUSED = "strategy.execution.paused"
    RESUMED = "strategy.execution.resumed"
    STOPPED = "strategy.execution.stopped"
    COMPLETED = "strategy.execution.completed"
    ERROR = "strategy.execution.error"


# --------------------------------------------------------------------------- JSON encoding


def encode_json(value: object, *, indent: int | None = None) -> str:
    """JSON text with Decimals as exact numbers; `indent` gives json.dumps(indent=n) layout.

    Accepts dict (str keys), list/tuple, str, bool, None, int, finite Decimal and UUID.
    A float is refused: money must never have passed through binary floating point.
    """
    parts: list[str] = []
    _encode(value, parts, indent, 0)
    return "".join(parts)


def encode_event(event: Mapping[str, object]) -> bytes:
    """Compact UTF-8 JSON of one event, as published on Kafka."""
    return encode_json(event).encode("utf-8")


def _encode(value: object, out: list[str], indent: int | None, level: int) -> None:
    if value is None or isinstance(value, bool | str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite number cannot be encoded: {value}")
        out.append(format(value, "f"))
    elif isinstance(value, uuid.UUID):
        out.append(f'"{value}"')
    elif isinstance(value, Mapping):
        items = list(value.items())
        if not items:
            out.append("{}")
            return
        inner, close, sep = _layout(indent, level)
        out.append("{" + inner)
        for position, (key, item) in enumerate(items):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            if position:
                out.append(sep)
            out.append(json.dumps(key, ensure_ascii=False) + ": ")
            _encode(item, out, indent, level + 1)
        out.append(close + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner, close, sep = _layout(indent, level)
        out.append("[" + inner)
        for position, item in enumerate(value):
            if position:
                out.append(sep)
            _encode(item, out, indent, level + 1)
        out.append(close + "]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON (floats are refused)")


def _layout(indent: int | None, level: int) -> tuple[str, str, str]:
    if indent is None:
        return "", "", ", "
    pad = " " * indent
    return "\n" + pad * (level + 1), "\n" + pad * level, ",\n" + pad * (level + 1)


def isoformat_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix; microseconds only when present."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def money_number(value: Decimal) -> Decimal:
    """A money amount as published: exact, with at least two decimals (175.5 -> 175.50)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        return value.quantize(Decimal("0.01"))  # only appends zeros: exact
    return value


def quantity_number(value: Decimal) -> Decimal | int:
    """A quantity as published: whole shares as an integer (200), fractions exact."""
    return int(value) if value == value.to_integral_value() else value


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class EventContext:
    """Who an event is about: the fields every `strategy.execution` event starts with."""

    execution_id: uuid.UUID
    strategy_id: uuid.UUID
    user_id: uuid.UUID

    @property
    def key(self) -> str:
        """The Kafka key of this execution's events (the strategy id, per the spec)."""
        return str(self.strategy_id)


class OrderLike(Protocol):
    """An order as the events describe it (`OrderIntent` fits)."""

    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...


def _base(event_type: EventType, ctx: EventContext, at: datetime) -> dict[str, object]:
    return {
        "type": str(event_type),
        "execution_id": str(ctx.execution_id),
        "strategy_id": str(ctx.strategy_id),
        "user_id": str(ctx.user_id),
        "timestamp": isoformat_z(at),
    }


def _order_line(order: OrderLike) -> dict[str, object]:
    return {
        "symbol": order.symbol,
        "side": str(order.side),
        "quantity": quantity_number(order.quantity),
        "price": money_number(order.price),
        "value": money_number(order.quantity * order.price),
    }


def execution_started(
    ctx: EventContext, *, at: datetime, initial_orders: Sequence[OrderLike]
) -> dict[str, object]:
    """`strategy.execution.started`, exactly the spec's shape (`value` = quantity x price)."""
    event = _base(EventType.STARTED, ctx, at)
    event["status"] = "active"
    event["initial_orders"] = [_order_line(order) for order in initial_orders]
    return event


def order_submitted(
    ctx: EventContext, *, at: datetime, intent: OrderIntent, oms_order_id: str | None
) -> dict[str, object]:
    """An order was accepted for submission to the OMS (`oms_order_id` once known)."""
    event = _base(EventType.ORDER_SUBMITTED, ctx, at)
    event.update(
        client_order_id=intent.client_order_id,
        oms_order_id=oms_order_id,
        order_type=str(intent.order_type),
        purpose=str(intent.purpose),
        **_order_line(intent),
    )
    if intent.limit_price is not None:
        event["limit_price"] = money_number(intent.limit_price)
    return event


def order_filled(
    ctx: EventContext,
    *,
    at: datetime,
    fill: Fill,
    oms_order_id: str,
    status: OrderStatus,
    filled_quantity: Decimal,
) -> dict[str, object]:
    """One fill of an order; `filled_quantity` is cumulative, `status` the order's after it."""
    event = _base(EventType.ORDER_FILLED, ctx, at)
    event.update(
        client_order_id=fill.client_order_id,
        oms_order_id=oms_order_id,
        fill_id=fill.fill_id,
        **_order_line(fill),
        fee=money_number(fill.fee),
        filled_quantity=quantity_number(filled_quantity),
        status=str(status),
        filled_at=isoformat_z(fill.filled_at),
    )
    return event


def order_rejected(
    ctx: EventContext,
    *,
    at: datetime,
    order: OrderLike,
    client_order_id: str | None,
    source: str,
    reason_code: str,
    reason: str,
) -> dict[str, object]:
    """An order refused by the risk gate (`source` "risk", no client id) or by the OMS."""
    event = _base(EventType.ORDER_REJECTED, ctx, at)
    event.update(
        client_order_id=client_order_id,
        **_order_line(order),
        source=source,
        reason_code=reason_code,
        reason=reason,
    )
    return event


def risk_event(
    ctx: EventContext,
    *,
    at: datetime,
    event_type: str,
    severity: str,
    description: str,
    action_taken: str,
    symbol: str | None = None,
) -> dict[str, object]:
    """Mirror of a `risk_events` row (severity INFO, WARNING or CRITICAL)."""
    event = _base(EventType.RISK_EVENT, ctx, at)
    event.update(
        event_type=event_type,
        severity=severity,
        description=description,
        action_taken=action_taken,
        symbol=symbol,
    )
    return event


def stop_loss_triggered(
    ctx: EventContext,
    *,
    at: datetime,
    symbol: str,
    quantity: Decimal,
    average_cost: Decimal,
    stop_price: Decimal,
    price: Decimal,
    unrealized_pnl: Decimal,
) -> dict[str, object]:
    """A position crossed its stop (with buffer) at `price`; a closing order follows."""
    event = _base(EventType.STOP_LOSS_TRIGGERED, ctx, at)
    event.update(
        symbol=symbol,
        quantity=quantity_number(quantity),
        average_cost=money_number(average_cost),
        stop_price=money_number(stop_price),
        price=money_number(price),
        unrealized_pnl=money_number(unrealized_pnl),
    )
    return event


def rebalanced(
    ctx: EventContext, *, at: datetime, max_drift: Decimal, orders: Sequence[OrderLike]
) -> dict[str, object]:
    """A rebalance batch was decided because the largest drift exceeded the threshold."""
    event = _base(EventType.REBALANCED, ctx, at)
    event.update(max_drift=max_drift, orders=[_order_line(order) for order in orders])
    return event


def _status_change(
    event_type: EventType,
    status: str,
    ctx: EventContext,
    at: datetime,
    reason: str,
    request_id: uuid.UUID | None,
) -> dict[str, object]:
    event = _base(event_type, ctx, at)
    event.update(status=status, reason=reason, request_id=str(request_id) if request_id else None)
    return event


def execution_paused(
    ctx: EventContext, *, at: datetime, reason: str, request_id: uuid.UUID | None = None
) -> dict[str, object]:
    return _status_change(EventType.PAUSED, "paused", ctx, at, reason, request_id)


def execution_resumed(
    ctx: EventContext, *, at: datetime, reason: str, request_id: uuid.UUID | None = None
) -> dict[str, object]:
    return _status_change(EventType.RESUMED, "active", ctx, at, reason, request_id)


def execution_stopped(
    ctx: EventContext,
    *,
    at: datetime,
    reason: str,
    realized_pnl: Decimal,
    total_pnl: Decimal,
    request_id: uuid.UUID | None = None,
) -> dict[str, object]:
    """Stopped on request, on shutdown (policy close) or on a halt; positions are closed."""
    event = _status_change(EventType.STOPPED, "stopped", ctx, at, reason, request_id)
    event.update(realized_pnl=money_number(realized_pnl), total_pnl=money_number(total_pnl))
    return event


def execution_completed(
    ctx: EventContext, *, at: datetime, realized_pnl: Decimal, total_pnl: Decimal
) -> dict[str, object]:
    event = _base(EventType.COMPLETED, ctx, at)
    event.update(
        status="completed",
        realized_pnl=money_number(realized_pnl),
        total_pnl=money_number(total_pnl),
    )
    return event


def execution_error(
    ctx: EventContext, *, at: datetime, error_code: str, message: str
) -> dict[str, object]:
    """The execution moved to status `error`; `message` never carries secrets or tracebacks."""
    event = _base(EventType.ERROR, ctx, at)
    event.update(status="error", error_code=error_code, message=message)
    return event


# --------------------------------------------------------------------------- strict JSON


class RejectCode(StrEnum):
    """Machine-readable reasons for refusing input; also the DLQ metric's label values."""

    OVERSIZED = "oversized"
    EMPTY_PAYLOAD = "empty_payload"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    HANDLER_ERROR = "handler_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input was refused: a code, the offending field path ("" = whole message)."""

    code: RejectCode
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.code}: {where}{self.reason}"


class _JsonReject(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonReject(Rejection(RejectCode.INVALID_JSON, key, "duplicate key"))
        result[key] = value
    return result


def _no_constants(name: str) -> object:
    raise _JsonReject(Rejection(RejectCode.INVALID_JSON, "", f"{name} is not a JSON number"))


def parse_json_object(payload: bytes | str, *, max_bytes: int) -> dict[str, Any] | Rejection:
    """Strict JSON object decode: UTF-8, no duplicate keys, no NaN/Infinity, numbers as
    Decimal, bounded size and nesting. Never raises."""
    try:
        raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    except UnicodeEncodeError:
        return Rejection(RejectCode.INVALID_ENCODING, "", "payload is not valid UTF-8")
    if not raw:
        return Rejection(RejectCode.EMPTY_PAYLOAD, "", "empty payload")
    if len(raw) > max_bytes:
        return Rejection(RejectCode.OVERSIZED, "", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(RejectCode.INVALID_ENCODING, "", "payload is not valid UTF-8")
    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except _JsonReject as exc:
        return exc.rejection
    except RecursionError:
        return Rejection(RejectCode.INVALID_JSON, "", "nesting too deep")
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return Rejection(RejectCode.INVALID_JSON, "", str(exc).splitlines()[0][:200])
    if not isinstance(data, dict):
        return Rejection(RejectCode.NOT_AN_OBJECT, "", "top level must be a JSON object")
    return data


# --------------------------------------------------------------------------- control


class ControlAction(StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"


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
    }
)


def parse_control(payload: bytes | str) -> ControlRequest | Rejection:
    """Parse a `strategy.control` message; any input gives a value, never an exception."""
    data = parse_json_object(payload, max_bytes=MAX_CONTROL_BYTES)
    if isinstance(data, Rejection):
        return data
    try:
        return _control_from(data)
    except _JsonReject as exc:
        return exc.rejection


def _control_from(data: dict[str, Any]) -> ControlRequest:
    unknown = sorted(set(data) - _CONTROL_FIELDS)
    if unknown:
        raise _JsonReject(Rejection(RejectCode.UNKNOWN_FIELD, unknown[0], "unknown field"))
    message_type = _required_str(data, "type")
    if message_type != CONTROL_TYPE:
        raise _JsonReject(Rejection(RejectCode.INVALID_VALUE, "type", f"must be {CONTROL_TYPE!r}"))
    execution_id = _optional_uuid(data, "execution_id")
    strategy_id = _optional_uuid(data, "strategy_id")
    if (execution_id is None) == (strategy_id is None):
        raise _JsonReject(
            Rejection(
                RejectCode.MISSING_FIELD if execution_id is None else RejectCode.INVALID_VALUE,
                "execution_id",
                "exactly one of execution_id or strategy_id is required",
            )
        )
    action_text = _required_str(data, "action")
    try:
        action = ControlAction(action_text)
    except ValueError:
        raise _JsonReject(
            Rejection(RejectCode.INVALID_VALUE, "action", "must be stop, pause or resume")
        ) from None
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _JsonReject(Rejection(RejectCode.INVALID_TYPE, "reason", "must be a string"))
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise _JsonReject(
            Rejection(RejectCode.INVALID_VALUE, "reason", f"longer than {MAX_REASON_CHARS}")
        )
    return ControlRequest(
        request_id=_required_uuid(data, "request_id"),
        user_id=_required_uuid(data, "user_id"),
        action=action,
        timestamp=_required_timestamp(data, "timestamp"),
        execution_id=execution_id,
        strategy_id=strategy_id,
        reason=reason,
    )


def _required_str(data: Mapping[str, Any], field: str) -> str:
    if field not in data or data[field] is None:
        raise _JsonReject(Rejection(RejectCode.MISSING_FIELD, field, "required"))
    value = data[field]
    if not isinstance(value, str):
        raise _JsonReject(Rejection(RejectCode.INVALID_TYPE, field, "must be a string"))
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
        raise _JsonReject(Rejection(RejectCode.INVALID_VALUE, field, "must be a UUID"))
    return value


def _required_timestamp(data: Mapping[str, Any], field: str) -> datetime:
    text = _required_str(data, field)
    try:
        value = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or "T" not in text:
        raise _JsonReject(
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
    return message


# --------------------------------------------------------------------------- dead letters


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a consumed record came from; `str()` is the `source` passed to DeadLetterSink."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> SourceRef | None:
        """Inverse of `str()`; None for a free-form source (e.g. "paper")."""
        topic, _, rest = text.rpartition("/")
        topic, _, partition = topic.rpartition("/")
        if not topic or not partition.isdigit() or not rest.isdigit():
            return None
        return cls(topic, int(partition), int(rest))


def dead_letter_envelope(
    payload: bytes,
    *,
    code: str,
    reason: str,
    source: str,
    at: datetime,
    worker_id: str | None = None,
    max_payload_bytes: int = MAX_DEAD_LETTER_PAYLOAD,
) -> dict[str, object]:
    """The JSON envelope written to the dead-letter topic: reason + the original bytes.

    A payload over `max_payload_bytes` (an oversized message) keeps only its head; its size
    and SHA-256 still identify it, and the envelope stays under the broker's record limit.
    """
    ref = SourceRef.parse(source)
    kept = payload[:max_payload_bytes]
    return {
        "type": DEAD_LETTER_TYPE,
        "reason_code": code,
        "reason": reason[:1000],
        "source": source,
        "source_topic": ref.topic if ref else None,
        "source_partition": ref.partition if ref else None,
        "source_offset": ref.offset if ref else None,
        "dead_lettered_at": isoformat_z(at),
        "worker_id": worker_id,
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_truncated": len(kept) < len(payload),
        "payload_base64": base64.b64encode(kept).decode("ascii"),
    }
