"""The simulation's Kafka messages as bytes: JSON with money as exact JSON numbers (the
spec's format), never through a float."""

from __future__ import annotations

import json
from typing import Any


def encode(message: dict[str, Any]) -> bytes:
    """An approval message (Decimals in it written as JSON numbers)."""
    text = json.dumps(message, default=str)
    for key in ("initial_capital", "stop_loss_pct", "trailing_stop_pct", "take_profit_pct"):
        value = _find(message, key)
        if value is not None:
            text = text.replace(f'"{key}": "{value}"', f'"{key}": {value}')
    for sym, weight in message["config"]["allocation"].items():
        text = text.replace(f'"{sym}": "{weight}"', f'"{sym}": {weight}')
    return text.encode()


def _find(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for value in node.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
