"""`strategy-worker db migrate`, the operator's command, against the real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "strategy_worker.cli", "db", "migrate"]
ROOT = Path(__file__).resolve().parents[3]


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SW__"))}
    return subprocess.run(
        CLI, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


async def test_db_migrate_when_run_twice_then_applies_once_and_then_is_up_to_date(
    fresh_database_url: str,
) -> None:
    first = _run({"DATABASE_URL": fresh_database_url})
    second = _run({"DATABASE_URL": fresh_database_url})

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: 001")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "database is up to date"
    conn = await asyncpg.connect(fresh_database_url)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    finally:
        await conn.close()
    assert {"strategy_executions", "execution_orders", "position_snapshots", "risk_events"} <= (
        tables
    )


def test_db_migrate_when_database_unreachable_then_retries_and_one_error_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    done = _run({"DATABASE_URL": f"postgresql://nobody:secret@127.0.0.1:{port}/none"})

    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    retries = [ln for ln in done.stderr.splitlines() if "database_unreachable_retrying" in ln]
    assert len(errors) == 1, done.stderr
    assert f"127.0.0.1:{port}" in errors[0]
    assert "DATABASE_URL" in errors[0]
    assert len(retries) >= 1  # retried with backoff before giving up
    assert "secret" not in done.stderr
    assert "Traceback" not in done.stderr
