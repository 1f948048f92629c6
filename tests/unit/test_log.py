"""Logs: JSON lines with execution context; secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from strategy_worker.log import (
    RepeatFilter,
    bind_execution,
    configure_logging,
    get_logger,
    redact_text,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("INFO", json_output=True, stream=buffer)
    yield buffer
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_lines_are_json_with_iso_timestamp_level_and_bound_execution(stream: io.StringIO) -> None:
    log = get_logger("sw.test")

    with bind_execution("e-1", "s-1"):
        log.info("order submitted", symbol="AAPL")
    log.info("outside")

    inside, outside = lines(stream)
    assert inside["event"] == "order submitted"
    assert inside["level"] == "info"
    assert (inside["execution_id"], inside["strategy_id"]) == ("e-1", "s-1")
    assert str(inside["timestamp"]).endswith("Z")
    assert "execution_id" not in outside


def test_secret_keys_and_url_passwords_are_redacted(stream: io.StringIO) -> None:
    log = get_logger("sw.test")

    log.info(
        "connecting",
        password="SeCrEt1",
        db_password="SeCrEt2",
        api_token="SeCrEt3",
        dsn="postgresql://u:SeCrEt4@h/db",
        target="redis://:SeCrEt5@cache:6379/0",
        nested={"secret": "SeCrEt6", "list": ["amqp://u:SeCrEt7@x"]},
    )
    logging.getLogger("aiokafka").warning("failed postgresql://a:SeCrEt8@h/d")
    try:
        raise RuntimeError("boom redis://:SeCrEt9@h")
    except RuntimeError:
        log.exception("crashed")

    output = stream.getvalue()
    for secret in (
        "SeCrEt1",
        "SeCrEt2",
        "SeCrEt3",
        "SeCrEt4",
        "SeCrEt5",
        "SeCrEt6",
        "SeCrEt7",
        "SeCrEt8",
        "SeCrEt9",
    ):
        assert secret not in output
    assert "redis://:***@cache:6379/0" in output


def test_redact_text_keeps_user_and_host() -> None:
    assert (
        redact_text("postgresql://app:s3cret@db:5432/aipx") == "postgresql://app:***@db:5432/aipx"
    )
    assert redact_text("no url here") == "no url here"


def test_library_line_repeated_within_window_then_logged_once_with_count(
    stream: io.StringIO,
) -> None:
    library = logging.getLogger("aiokafka")
    for port in range(500):
        library.error("Unable connect to node with id %s: %s", 1, f"refused {port}")
    get_logger("sw.test").error("our own line")
    get_logger("sw.test").error("our own line")

    events = [line["event"] for line in lines(stream)]
    assert events == [
        "Unable connect to node with id 1: refused 0",
        "our own line",
        "our own line",
    ]


def test_repeat_filter_when_window_passed_then_line_carries_suppressed_count() -> None:
    now = [0.0]
    repeats = RepeatFilter(window_s=30.0, clock=lambda: now[0])

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, text, (), None)

    passed = [repeats.filter(record("node down")) for _ in range(4)]
    now[0] = 31.0
    late = record("node down")

    assert passed == [True, False, False, False]
    assert repeats.filter(late)
    assert getattr(late, "repeats_suppressed", None) == 3
    assert repeats.filter(record("another template"))
