"""Deterministic identifiers: the same input always yields the same id, so replays and
re-planning can never mint a second execution or a second order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

# Fixed namespace for every uuid5 this project derives. Never change it: ids are persisted.
NAMESPACE = uuid.UUID("5d3c1f5e-8a57-4bd4-9a0e-5a4b7f0e2c11")


def execution_id_for(strategy_id: uuid.UUID, approved_at: datetime) -> uuid.UUID:
    """One execution per approved strategy message: (strategy_id, the instant it was
    approved). The instant, not its spelling: `...T15:00:00+01:00` is `...T14:00:00Z`, so a
    redelivery in another notation is the same execution (ids of UTC `Z` timestamps are what
    they always were)."""
    instant = approved_at.astimezone(UTC)
    text = instant.strftime("%Y-%m-%dT%H:%M:%S")
    if instant.microsecond:
        text += f".{instant.microsecond:06d}".rstrip("0")
    return uuid.uuid5(NAMESPACE, f"execution:{strategy_id}:{text}Z")


def client_order_id(execution_id: uuid.UUID, intent_seq: int) -> str:
    """The client order id of the `intent_seq`-th order intent of an execution."""
    if intent_seq < 1:
        raise ValueError("intent_seq starts at 1")
    return f"sw-{execution_id.hex}-{intent_seq:06d}"
