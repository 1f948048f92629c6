"""PostgreSQL fixtures: one freshly created and migrated database per test module.

Built on the session's `database_url` (tests/integration/conftest.py): each module gets its
own database, so tests never see another module's rows; it is dropped WITH (FORCE) at the
end of the module.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.testing.databases import create_database, drop_database


@pytest.fixture(scope="module")
def migrated_dsn(database_url: str) -> Iterator[str]:
    """DSN of a new database with every migration applied, private to this test module."""
    name = f"sw_pg_{uuid.uuid4().hex[:16]}"
    # Module-scoped and loop-independent: a DSN string outlives any one test's event loop.
    asyncio.run(create_database(database_url, name))
    dsn = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        asyncio.run(drop_database(database_url, name))


@pytest.fixture
async def store(migrated_dsn: str) -> AsyncIterator[PostgresStore]:
    """A PostgresStore on the module's database; closed after the test."""
    config = DatabaseConfig(url=migrated_dsn, pool_min_size=1, pool_max_size=4)
    opened = await PostgresStore.connect(config)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def other_store(migrated_dsn: str) -> AsyncIterator[PostgresStore]:
    """A second, independent store (its own pool): another worker on the same database."""
    config = DatabaseConfig(url=migrated_dsn, pool_min_size=1, pool_max_size=4)
    opened = await PostgresStore.connect(config)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def raw_conn(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the module's database, for checking rows directly."""
    conn = await asyncpg.connect(migrated_dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()
