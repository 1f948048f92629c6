"""The migration runner against the real PostgreSQL: idempotent, concurrent-safe, strict."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import asyncpg
import pytest

from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.errors import (
    DatabaseAccessError,
    DatabaseUnreachableError,
    MigrationError,
)
from strategy_worker.adapters.postgres.migrate import MIGRATIONS_DIR, discover, migrate
from strategy_worker.adapters.postgres.repository import PostgresStore

pytestmark = pytest.mark.integration

#: Every packaged version, in order (the tests hold whatever migrations ship).
PACKAGED = [m.version for m in discover()]
TABLES = {
    "strategy_executions",
    "execution_orders",
    "execution_fills",
    "position_snapshots",
    "risk_events",
    "control_requests",
    "oms_report_cursor",
    "event_outbox",
    "schema_migrations",
    "snapshot_retention",
    "market_bars",
    "signal_decisions",
    "execution_protection",
}
#: Every packaged migration, in order (001 and the ones after it).
PACKAGED = [m.version for m in discover()]


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _copy_migrations(target: Path) -> Path:
    target.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, target / path.name)
    return target


async def test_migrate_twice_applies_once_and_records_checksums(fresh_database_url: str) -> None:
    first = await migrate(fresh_database_url)
    second = await migrate(fresh_database_url)

    assert first == PACKAGED
    assert second == []
    assert await _tables(fresh_database_url) >= TABLES
    conn = await asyncpg.connect(fresh_database_url)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    finally:
        await conn.close()
    assert sorted((r["version"], len(r["checksum"])) for r in rows) == [(v, 64) for v in PACKAGED]


async def test_concurrent_migrations_apply_each_version_exactly_once(
    fresh_database_url: str,
) -> None:
    results = await asyncio.gather(*(migrate(fresh_database_url) for _ in range(4)))

    assert sorted(results) == [[], [], [], PACKAGED]
    assert await _tables(fresh_database_url) >= TABLES


async def test_an_applied_migration_that_changed_is_refused(
    fresh_database_url: str, tmp_path: Path
) -> None:
    directory = _copy_migrations(tmp_path / "migrations")
    await migrate(fresh_database_url, directory)
    edited = directory / "001_strategy_worker.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")

    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(fresh_database_url, directory)


async def test_a_new_migration_is_applied_and_an_unknown_applied_one_is_refused(
    fresh_database_url: str, tmp_path: Path
) -> None:
    directory = _copy_migrations(tmp_path / "migrations")
    (directory / "900_extra.sql").write_text("CREATE TABLE extra (id int PRIMARY KEY);\n")

    applied = await migrate(fresh_database_url, directory)

    assert applied == [*PACKAGED, "900"]
    with pytest.raises(MigrationError, match="900 unknown"):
        await migrate(fresh_database_url)  # the packaged set does not know 900


async def test_a_failing_migration_leaves_the_database_untouched(
    fresh_database_url: str, tmp_path: Path
) -> None:
    directory = _copy_migrations(tmp_path / "migrations")
    (directory / "901_broken.sql").write_text("CREATE TABLE broken (id int PRIMARY KEY;\n")

    with pytest.raises(MigrationError, match=r"901_broken\.sql failed"):
        await migrate(fresh_database_url, directory)

    assert "strategy_executions" not in await _tables(fresh_database_url)


async def test_store_refuses_to_start_on_an_unmigrated_database(fresh_database_url: str) -> None:
    with pytest.raises(MigrationError, match="strategy-worker db migrate"):
        await PostgresStore.connect(DatabaseConfig(url=fresh_database_url))


async def test_unreachable_database_fails_in_one_line_naming_host_port_and_setting() -> None:
    port = _free_port()
    dsn = f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/aipx"

    with pytest.raises(DatabaseUnreachableError) as caught:
        await migrate(dsn, connect_attempts=2)

    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "DATABASE_URL" in message
    assert "s3cret-pw" not in message
    assert caught.value.retryable is True
    assert caught.value.__cause__ is None  # no driver traceback chained onto the message


async def test_store_startup_retries_with_backoff_then_names_the_config_keys() -> None:
    port = _free_port()
    config = DatabaseConfig(host="127.0.0.1", port=port, connect_attempts=3, password="pw-x")
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    with pytest.raises(DatabaseUnreachableError) as caught:
        await PostgresStore.connect(config, sleep=no_wait)

    message = str(caught.value)
    assert len(delays) == 2
    assert delays[1] > delays[0] * 0.5  # grows (jitter keeps it within [50%, 100%])
    assert f"127.0.0.1:{port}" in message
    assert "database.host/database.port" in message
    assert "pw-x" not in message


async def test_missing_database_is_an_access_error_without_retries(database_url: str) -> None:
    config = DatabaseConfig(url=database_url.rsplit("/", 1)[0] + "/sw_no_such_database")
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    with pytest.raises(DatabaseAccessError, match="sw_no_such_database"):
        await PostgresStore.connect(config, sleep=no_wait)
    assert delays == []
