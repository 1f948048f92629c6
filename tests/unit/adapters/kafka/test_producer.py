"""Event ids: the same payload republished after a crash carries the same id."""

from __future__ import annotations

from strategy_worker.adapters.kafka.producer import event_id


def test_event_id_is_deterministic_per_payload() -> None:
    assert event_id(b'{"a": 1}') == event_id(b'{"a": 1}')
    assert event_id(b'{"a": 1}') != event_id(b'{"a": 2}')
