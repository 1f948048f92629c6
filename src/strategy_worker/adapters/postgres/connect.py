"""Connecting at startup: capped exponential backoff with jitter, one-line failures.

Also the translation of driver errors into StoreError, shared by the repository and the
migration runner, so callers only ever see the project's errors.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog

from strategy_worker.adapters.postgres.errors import DatabaseAccessError, DatabaseUnreachableError
from strategy_worker.errors import StoreError

T = TypeVar("T")

_log = structlog.get_logger(__name__)

# SQLSTATE classes worth retrying: connection exceptions, insufficient resources, operator
# intervention (shutdown, restart, cancel), transaction rollback (serialization, deadlock).
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "53", "57", "40")


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Delay before retry number `attempt` (1-based): base * 2**(attempt-1), capped, then
    scaled into [50%, 100%] by `jitter` in [0, 1) so restarting workers do not stampede."""
    raw = min(cap, base * 2.0 ** max(0, attempt - 1))
    return raw * (0.5 + jitter / 2)


def one_line(exc: BaseException) -> str:
    """A short single-line description of an exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def is_unreachable(exc: BaseException) -> bool:
    """True for errors meaning "the server is not there (yet)", worth retrying."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The driver's protocol state broke with the connection ("cannot switch to state
        # ...; another operation is in progress" when the server went away mid-answer):
        # the connection is dropped, and the same call on a new one can succeed.
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state.startswith(("08", "53", "57P"))
    return False


def to_store_error(exc: BaseException, operation: str) -> StoreError:
    """Translate a driver error into StoreError, retryable when retrying can help."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        retryable = state.startswith(_RETRYABLE_SQLSTATE_PREFIXES)
        return StoreError(f"{operation} failed [{state}]: {one_line(exc)}", retryable=retryable)
    retryable = is_unreachable(exc)
    kind = "lost the database" if retryable else "failed"
    return StoreError(f"{operation} {kind}: {one_line(exc)}", retryable=retryable)


async def connect_with_retry(
    attempt_connect: Callable[[], Awaitable[T]],
    *,
    where: str,
    hint: str,
    attempts: int,
    base: float,
    cap: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call `attempt_connect` until it succeeds, retrying only "unreachable" errors.

    Raises DatabaseUnreachableError after `attempts` tries, DatabaseAccessError at once for
    a refused login or a missing database; both one line, naming `where` and `hint`.
    """
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await attempt_connect()
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        ) as exc:
            raise DatabaseAccessError(
                f"PostgreSQL at {where} refused the connection ({one_line(exc)}); "
                f"check {hint}, database.user/database.name and DB_PASSWORD"
            ) from None
        except Exception as exc:
            if not is_unreachable(exc):
                raise to_store_error(exc, f"connecting to PostgreSQL at {where}") from exc
            last = exc
            if attempt < attempts:
                delay = backoff_delay(attempt, base=base, cap=cap, jitter=rng())
                _log.warning(
                    "database_unreachable_retrying",
                    where=where,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=one_line(exc),
                )
                await sleep(delay)
    assert last is not None
    raise DatabaseUnreachableError(
        f"PostgreSQL at {where} is unreachable after {attempts} attempt(s) "
        f"({one_line(last)}); check {hint}"
    ) from None
