"""Structured logging: JSON lines (structlog) with execution context and secret redaction.

Named `log` so it never shadows the standard library's `logging`. Library loggers (aiokafka,
asyncpg, aiohttp) go through the same processors, so their lines are JSON and redacted too.
`bind_execution` puts `execution_id` / `strategy_id` in contextvars: every line logged by that
task (and tasks it creates afterwards) carries them.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "***"

# Keys whose values are secrets whatever they hold.
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authori[sz]ation|credential|private[_-]?key|"
    r"cookie|sasl_plain_password|dsn)",
    re.IGNORECASE,
)
# A password inside a URL: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s]+(?=@)")


def redact_text(text: str) -> str:
    """Mask the password of every URL in `text`."""
    return _URL_PASSWORD.sub(lambda match: match.group("head") + REDACTED, text)


def _redact_value(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if depth < 4 and isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_KEY.search(key)
            else _redact_value(item, depth + 1)
            for key, item in value.items()
        }
    if depth < 4 and isinstance(value, list | tuple):
        return [_redact_value(item, depth + 1) for item in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: secret-looking keys are masked, URL passwords stripped anywhere."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


# Libraries that log the same line every 100 ms while a server is away (aiokafka retries).
_CHATTY = ("aiokafka", "kafka", "asyncio")
REPEAT_WINDOW_S = 30.0


class RepeatFilter(logging.Filter):
    """Let a library's line through once per window, however often it repeats.

    aiokafka logs "Unable connect to node" ten times a second while the broker is down; at
    3 a.m. the first line and a count say as much as thousands. Lines are the same when the
    logger, level and message template (before its arguments) are; the first line after a
    window carries `repeats_suppressed`, how many were held back.
    """

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_CHATTY):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 1000:  # bounded: templates are few, but never trust that
            self._seen.clear()
        if last is not None and last[1]:
            record.repeats_suppressed = last[1]
        self._seen[key] = (now, 0)
        return True


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure_logging(
    level: str = "INFO", *, json_output: bool = True, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to one handler writing JSON (or console) lines."""
    final: list[Processor] = [
        structlog.processors.format_exc_info,
        redact_secrets,  # after exc formatting: tracebacks get URL passwords stripped too
        structlog.processors.JSONRenderer(sort_keys=False)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their INFO is connection noise; warnings still come through.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A bound structlog logger (configure_logging must have run for JSON output)."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name, **initial)
    return logger


@contextmanager
def bind_execution(execution_id: object, strategy_id: object | None = None) -> Iterator[None]:
    """Bind `execution_id` (and `strategy_id`) to every log line of the current context."""
    values: MutableMapping[str, str] = {"execution_id": str(execution_id)}
    if strategy_id is not None:
        values["strategy_id"] = str(strategy_id)
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
