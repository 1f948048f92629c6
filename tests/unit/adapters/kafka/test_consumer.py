"""Which handler failures are retried in place (never dead-lettered, never committed)."""

from __future__ import annotations

import pytest

from strategy_worker.adapters.kafka.consumer import ConsumedRecord, is_retryable
from strategy_worker.errors import StoreError, TransientError, ValidationError


@pytest.mark.parametrize(
    "error",
    [
        TransientError("db down"),
        StoreError("pool exhausted", retryable=True),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_transient_failures_are_retried_not_dead_lettered(error: Exception) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error", [ValidationError("bad"), StoreError("constraint"), ValueError(), KeyError("x")]
)
def test_other_failures_are_dead_lettered(error: Exception) -> None:
    assert not is_retryable(error)


def test_record_source_is_the_dead_letter_source_string() -> None:
    record = ConsumedRecord(
        topic="strategy.approved", partition=2, offset=17, key=None, value=b"{}", timestamp_ms=0
    )

    assert str(record.source) == "strategy.approved/2/17"
