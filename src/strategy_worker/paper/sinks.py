"""Paper mode's event and dead-letter sinks: JSON lines, one event per line, flushed at once."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from strategy_worker.messages import encode_json


class JsonLinesSink:
    """EventSink + DeadLetterSink writing JSON lines to a file (or discarding them)."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        self.events: list[Mapping[str, Any]] = []
        self.dead_letters: list[Mapping[str, Any]] = []

    async def publish(self, key: str, event: Mapping[str, object]) -> None:
        self.events.append(event)
        self._write({"key": key, **event})

    async def publish_batch(self, key: str, events: Sequence[Mapping[str, object]]) -> None:
        for event in events:
            await self.publish(key, event)

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
