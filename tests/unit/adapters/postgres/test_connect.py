"""Startup connection policy: backoff shape and one-line failures (no database needed)."""

from __future__ import annotations

import asyncpg
import pytest

from strategy_worker.adapters.postgres.connect import (
    backoff_delay,
    connect_with_retry,
    to_store_error,
)
from strategy_worker.adapters.postgres.errors import DatabaseAccessError, DatabaseUnreachableError


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base=0.5, cap=4.0, jitter=0.999999) for n in range(1, 7)]

    assert [round(d, 3) for d in delays] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_keeps_delay_between_half_and_full() -> None:
    assert backoff_delay(3, base=1.0, cap=10.0, jitter=0.0) == 2.0
    assert 2.0 <= backoff_delay(3, base=1.0, cap=10.0, jitter=0.5) < 4.0


async def test_unreachable_after_all_attempts_is_one_line_with_where_and_hint() -> None:
    calls = 0
    slept: list[float] = []

    async def refuse() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError(111, "Connect call failed\n('db', 5432)")

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(DatabaseUnreachableError) as caught:
        await connect_with_retry(
            refuse,
            where="db:5432",
            hint="DATABASE_URL",
            attempts=4,
            base=0.1,
            cap=1.0,
            sleep=fake_sleep,
            rng=lambda: 0.0,
        )

    assert calls == 4
    assert slept == [0.05, 0.1, 0.2]
    assert "\n" not in str(caught.value)
    assert "db:5432" in str(caught.value)
    assert "DATABASE_URL" in str(caught.value)


async def test_success_after_a_retry_returns_the_connection() -> None:
    outcomes: list[object] = [TimeoutError(), "connected"]

    async def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return str(outcome)

    async def fake_sleep(_: float) -> None:
        return None

    result = await connect_with_retry(
        flaky, where="db:5432", hint="x", attempts=3, base=0.1, cap=1.0, sleep=fake_sleep
    )

    assert result == "connected"


async def test_bad_password_fails_at_once_without_retrying() -> None:
    calls = 0

    async def refuse_login() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.InvalidPasswordError('password authentication failed for user "sw"')

    with pytest.raises(DatabaseAccessError, match="DB_PASSWORD"):
        await connect_with_retry(
            refuse_login, where="db:5432", hint="DATABASE_URL", attempts=5, base=0.1, cap=1.0
        )
    assert calls == 1


def test_driver_errors_become_store_errors_retryable_only_when_it_can_help() -> None:
    lost = to_store_error(asyncpg.ConnectionDoesNotExistError("closed"), "op")
    deadlock = to_store_error(asyncpg.DeadlockDetectedError("deadlock"), "op")
    check = to_store_error(asyncpg.CheckViolationError("violates check"), "op")

    assert (lost.retryable, deadlock.retryable, check.retryable) == (True, True, False)
    assert "op failed" in str(check)


def test_driver_protocol_state_error_after_server_loss_then_retryable() -> None:
    broken = to_store_error(
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        "renew_leases",
    )

    assert broken.retryable
    assert "renew_leases lost the database" in str(broken)
