"""Wire formats the worker speaks on Kafka (documented in docs/messages.md).

- `strategy.execution` events (`events`): plain dicts encoded by `encode_json`, which writes
  every `Decimal` as a JSON *number* from its exact text (the spec's sample shows numbers:
  200, 175.50, 35100.00) and refuses floats, so no binary rounding ever reaches the wire.
- `strategy.control` requests (`control`): `parse_control` turns any bytes into a
  `ControlRequest` or a `Rejection` (code + field path); it never raises.
- Dead-letter envelopes (`dead_letter`): a rejected payload with its reason and source.
"""

from strategy_worker.messages.control import (
    ALL_ACTIONS,
    BASIC_ACTIONS,
    CONTROL_TYPE,
    KILL_SWITCH_ACTIONS,
    MAX_CONTROL_BYTES,
    ControlAction,
    ControlRequest,
    control_message,
    parse_control,
)
from strategy_worker.messages.dead_letter import (
    DEAD_LETTER_TYPE,
    MAX_DEAD_LETTER_PAYLOAD,
    SourceRef,
    dead_letter_envelope,
)
from strategy_worker.messages.events import (
    EventContext,
    EventType,
    OrderLike,
    execution_error,
    execution_paused,
    execution_refused,
    execution_resumed,
    execution_started,
    execution_stopped,
    execution_stopping,
    order_filled,
    order_rejected,
    order_submitted,
    rebalanced,
    risk_event,
    signal_decision,
    stop_loss_triggered,
)
from strategy_worker.messages.jsonwire import (
    InputRejected,
    RejectCode,
    Rejection,
    encode_event,
    encode_json,
    isoformat_z,
    money_number,
    parse_json_object,
    quantity_number,
)

__all__ = [
    "ALL_ACTIONS",
    "BASIC_ACTIONS",
    "CONTROL_TYPE",
    "DEAD_LETTER_TYPE",
    "KILL_SWITCH_ACTIONS",
    "MAX_CONTROL_BYTES",
    "MAX_DEAD_LETTER_PAYLOAD",
    "ControlAction",
    "ControlRequest",
    "EventContext",
    "EventType",
    "InputRejected",
    "OrderLike",
    "RejectCode",
    "Rejection",
    "SourceRef",
    "control_message",
    "dead_letter_envelope",
    "encode_event",
    "encode_json",
    "execution_error",
    "execution_paused",
    "execution_refused",
    "execution_resumed",
    "execution_started",
    "execution_stopped",
    "execution_stopping",
    "isoformat_z",
    "money_number",
    "order_filled",
    "order_rejected",
    "order_submitted",
    "parse_control",
    "parse_json_object",
    "quantity_number",
    "rebalanced",
    "risk_event",
    "signal_decision",
    "stop_loss_triggered",
]
