"""Schema migrations: numbered SQL files applied once, in order, with recorded checksums.

Safe to run twice (applied versions are skipped) and from several processes at once: the
whole run is one transaction holding a transaction-scoped advisory lock, so a second
runner waits, then finds everything applied. DDL in PostgreSQL is transactional, so a
failing migration leaves the schema exactly as it was.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from strategy_worker.adapters.postgres.config import describe_dsn
from strategy_worker.adapters.postgres.connect import connect_with_retry, to_store_error
from strategy_worker.adapters.postgres.errors import MigrationError

_log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
"""The packaged migrations (the top-level migrations/ of a checkout links to these files)."""

# Any constant works; it only has to be the same for every runner of this schema.
_LOCK_KEY = 0x5357_4D49_4752  # "SWMIGR"
_FILE_PATTERN = re.compile(r"^(?P<version>\d{3,})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: str
    name: str
    path: Path
    checksum: str

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def discover(migrations_dir: Path | None = None) -> list[Migration]:
    """The migrations in a directory, by version; a malformed or duplicate name is an error."""
    directory = MIGRATIONS_DIR if migrations_dir is None else migrations_dir
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = match["version"]
        if version in found:
            raise MigrationError(f"two migrations share version {version} in {directory}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, match["name"], path, checksum)
    if not found:
        raise MigrationError(f"no migrations found in {directory}")
    return [found[v] for v in sorted(found, key=int)]


def plan(migrations: list[Migration], applied: dict[str, str]) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones are unchanged.

    `applied` maps version -> recorded checksum. A changed applied file, or a version the
    database knows but these files do not (a newer schema), is a MigrationError.
    """
    known = {m.version: m for m in migrations}
    unknown = sorted(set(applied) - set(known), key=int)
    if unknown:
        raise MigrationError(
            f"database has migration(s) {', '.join(unknown)} unknown to this version of the "
            "worker; upgrade the worker"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {known[version].path.name} changed after it was applied "
                f"(checksum {checksum[:12]} recorded, {known[version].checksum[:12]} on disk); "
                "add a new migration instead of editing an applied one"
            )
    return [m for m in migrations if m.version not in applied]


async def migrate(
    dsn: str,
    migrations_dir: Path | None = None,
    *,
    connect_attempts: int = 3,
    connect_timeout: float = 10.0,
    hint: str = "DATABASE_URL (or database.host/database.port)",
) -> list[str]:
    """Apply the pending migrations; returns the versions applied by this call (in order).

    Raises DatabaseUnreachableError / DatabaseAccessError (one line, naming host:port and
    the setting to fix) when the database cannot be reached, MigrationError on a changed or
    unknown migration. `hint` names the setting to fix in that message (the CLI passes
    `DatabaseConfig.setting_hint()`).
    """
    migrations = discover(migrations_dir)
    where = describe_dsn(dsn)

    async def attempt() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, timeout=connect_timeout)

    conn = await connect_with_retry(
        attempt,
        where=where,
        hint=hint,
        attempts=connect_attempts,
        base=0.5,
        cap=4.0,
    )
    try:
        return await _apply(conn, migrations)
    except MigrationError:
        raise
    except Exception as exc:
        raise to_store_error(exc, f"migrating PostgreSQL at {where}") from exc
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    async with conn.transaction():
        # Taken first, before even the ledger exists: concurrent CREATE TABLE IF NOT EXISTS
        # can otherwise collide. Released automatically at commit or rollback.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_CREATE_LEDGER)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        pending = plan(migrations, {r["version"]: r["checksum"] for r in rows})
        for migration in pending:
            try:
                await conn.execute(migration.sql())
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.path.name} failed: {exc.sqlstate} "
                    f"{' '.join(str(exc).split())}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            _log.info("migration_applied", version=migration.version, name=migration.name)
    return [m.version for m in pending]


async def pending_versions(
    conn: asyncpg.Connection, migrations_dir: Path | None = None
) -> list[str]:
    """Versions not yet applied on this connection's database (checks applied checksums)."""
    migrations = discover(migrations_dir)
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: dict[str, str] = {}
    if exists:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
    return [m.version for m in plan(migrations, applied)]
