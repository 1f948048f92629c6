"""Dead-letter envelopes: a rejected payload with its reason code, reason and source."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from strategy_worker.messages.jsonwire import isoformat_z

DEAD_LETTER_TYPE = "strategy.dead_letter"
MAX_DEAD_LETTER_PAYLOAD = 256 * 1024


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
