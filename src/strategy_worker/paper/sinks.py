"""Paper mode's event publisher and dead-letter sink: JSON lines, one event per line (its
Kafka key, then the event's fields, money as exact JSON numbers), flushed at once."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from strategy_worker.messages import encode_json
from strategy_worker.store import OutboxEvent

if TYPE_CHECKING:
    from strategy_worker.ports import DeadLetterSink, EventPublisher


class JsonLinesSink:
    """EventPublisher + DeadLetterSink writing JSON lines to a file (or discarding them);
    `events` and `dead_letters` keep what went through, in order."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        self.events: list[Mapping[str, Any]] = []
        self.dead_letters: list[Mapping[str, Any]] = []

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """One line per event, in order: `{"key": <strategy id>, "event_id": ..., **payload}`
        (the event id, Kafka's `event-id` header: drop repeats by it)."""
        for event in events:
            self.events.append(event.payload)
            self._write({"key": event.key, "event_id": str(event.event_id), **event.payload})

    async def dead_letter(self, payload: bytes, *, code: str, reason: str, source: str) -> None:
        record = {
            "type": "strategy.dead_letter",
            "code": code,
            "reason": reason,
            "source": source,
            "payload_base64": base64.b64encode(payload[:65536]).decode("ascii"),
        }
        self.dead_letters.append(record)
        self._write(record)

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._file is not None:
            self._file.write(encode_json(record) + "\n")
            self._file.flush()

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


if TYPE_CHECKING:  # mypy proves the sink fits both ports

    def _implements_ports(sink: JsonLinesSink) -> tuple[EventPublisher, DeadLetterSink]:
        return sink, sink
