"""The spec's sample message (examples/tech-growth.json) and what the trading rules make of it.

Most end-to-end tests start from the sample without its entry rules (`SAMPLE_BYTES`: it
buys at approval); the signal tests use it exactly (`RULED_SAMPLE_BYTES`)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

from strategy_worker.domain.ids import execution_id_for

ROOT = Path(__file__).resolve().parents[3]
SAMPLE_MESSAGE = ROOT / "examples" / "tech-growth.json"
RULED_SAMPLE_BYTES = SAMPLE_MESSAGE.read_bytes()
"""The spec's sample exactly: its MOMENTUM entry rules wait for their signal on bars
(issue 14), so it buys nothing at approval."""
SAMPLE_BYTES = re.sub(rb',\s*"entry_rules":\s*\{[^{}]*\}', b"", RULED_SAMPLE_BYTES)
"""The spec's sample without its entry rules (the bytes otherwise as the file spells them):
it buys its whole allocation at approval, which is what most end-to-end tests start from."""
assert b"entry_rules" not in SAMPLE_BYTES
SAMPLE = json.loads(SAMPLE_BYTES, parse_float=Decimal)
STRATEGY_ID = uuid.UUID(SAMPLE["strategy_id"])
USER_ID = uuid.UUID(SAMPLE["user_id"])
APPROVED_AT = datetime.fromisoformat(SAMPLE["timestamp"])
EXECUTION_ID = execution_id_for(STRATEGY_ID, APPROVED_AT)
CAPITAL = Decimal("100000.00")
POSITION_LIMIT = Decimal("0.30")  # the spec's risk.max_position_size and the sample's own
SYMBOLS = ("AAPL", "GOOGL", "MSFT")

#: The spec's sample prices: AAPL's 175.50 is the spec's own example order price.
START_PRICES: dict[str, Decimal] = {
    "AAPL": Decimal("175.50"),
    "MSFT": Decimal("410.20"),
    "GOOGL": Decimal("140.10"),
}


#: The default cash reserve (README "Cash reserve"): 10 bps of slippage, 10 bps of fees and
#: $1 per order.
RESERVE_FACTOR = Decimal("1.0010") * Decimal("1.0010")
RESERVE_PER_ORDER = Decimal("1.00")


def expected_quantity(symbol: str) -> Decimal:
    """README "Initial sizing": the whole shares whose reserved cost fits capital x
    min(weight, 30%): floor((budget - $1) / (price x 1.001 x 1.001)) (one order each)."""
    weight: Decimal = min(SAMPLE["config"]["allocation"][symbol], POSITION_LIMIT)
    budget = CAPITAL * weight - RESERVE_PER_ORDER
    return (budget / (START_PRICES[symbol] * RESERVE_FACTOR)).to_integral_value(
        rounding=ROUND_FLOOR
    )


def other_strategy(name: str) -> tuple[bytes, uuid.UUID]:
    """A valid message for another strategy (the sample's bytes with a new strategy id)."""
    strategy_id = uuid.uuid5(uuid.NAMESPACE_URL, f"e2e/{name}/{uuid.uuid4()}")
    text = SAMPLE_BYTES.decode().replace(SAMPLE["strategy_id"], str(strategy_id))
    return text.encode(), strategy_id


def execution_of(strategy_id: uuid.UUID) -> uuid.UUID:
    """The execution a sample-shaped message for `strategy_id` creates."""
    return execution_id_for(strategy_id, APPROVED_AT)


def control(action: str, execution_id: uuid.UUID, request_id: uuid.UUID) -> bytes:
    """A control request from the owner, in the format of docs/messages.md."""
    return json.dumps(
        {
            "type": "strategy.control",
            "request_id": str(request_id),
            "execution_id": str(execution_id),
            "user_id": str(USER_ID),
            "action": action,
            "timestamp": datetime.now(UTC).isoformat(),
            "reason": "user requested",
        }
    ).encode()
