"""PostgreSQL adapter: the schema migrations and the asyncpg implementation of `Store`.

Public surface: `PostgresStore.connect(DatabaseConfig)`, `migrate(dsn)` and the errors.
"""

from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.errors import (
    DatabaseAccessError,
    DatabaseUnreachableError,
    MigrationError,
)
from strategy_worker.adapters.postgres.migrate import MIGRATIONS_DIR, migrate
from strategy_worker.adapters.postgres.repository import PostgresStore

__all__ = [
    "MIGRATIONS_DIR",
    "DatabaseAccessError",
    "DatabaseConfig",
    "DatabaseUnreachableError",
    "MigrationError",
    "PostgresStore",
    "migrate",
]
