"""The simulation's Kafka messages as bytes: JSON with money as exact JSON numbers (the
spec's format), never through a float."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MONEY_KEYS = (
    "initial_capital",
    "max_position_size",
    "max_daily_loss",
    "stop_loss_pct",
    "trailing_stop_pct",
    "take_profit_pct",
)
"""Fields written as JSON numbers (wherever they are in the message), besides the weights."""


def encode(message: Mapping[str, Any]) -> bytes:
    """An approval message, its money fields (Decimals or exact strings) written as JSON
    numbers."""
    text = json.dumps(message, default=str)
    for key in MONEY_KEYS:
        value = _find(message, key)
        if value is not None:
            text = text.replace(f'"{key}": "{value}"', f'"{key}": {value}')
    for sym, weight in message.get("config", {}).get("allocation", {}).items():
        text = text.replace(f'"{sym}": "{weight}"', f'"{sym}": {weight}')
    return text.encode()


def _find(node: Any, key: str) -> Any:
    if isinstance(node, Mapping):
        if key in node:
            return node[key]
        for value in node.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
