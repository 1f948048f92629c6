"""Paper mode's JSON-lines sink: one line per published event, in order, money exact."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

from strategy_worker.paper.sinks import JsonLinesSink
from strategy_worker.store import OutboxEvent


def _event(n: int, strategy_id: uuid.UUID) -> OutboxEvent:
    return OutboxEvent(
        event_id=uuid.uuid4(),
        execution_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        key=str(strategy_id),
        event_type="strategy.execution.order_filled",
        payload={"type": "strategy.execution.order_filled", "n": n, "price": Decimal("175.50")},
    )


async def test_published_events_are_written_one_line_each_in_order_with_their_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out" / "events.jsonl"
    strategy = uuid.uuid4()
    events = [_event(n, strategy) for n in range(3)]
    sink = JsonLinesSink(path)

    await sink.publish(events[:2])
    await sink.publish([])
    await sink.publish(events[2:])
    await sink.close()

    lines = path.read_text(encoding="utf-8").splitlines()
    parsed = [json.loads(line, parse_float=Decimal) for line in lines]
    assert [p["n"] for p in parsed] == [0, 1, 2]
    assert all(p["key"] == str(strategy) for p in parsed)
    assert all('"price": 175.50' in line for line in lines)  # an exact JSON number
    assert sink.events == [e.payload for e in events]


async def test_without_a_file_events_are_only_kept_in_memory() -> None:
    sink = JsonLinesSink(None)
    event = _event(1, uuid.uuid4())

    await sink.publish([event])
    await sink.close()

    assert sink.events == [event.payload]
