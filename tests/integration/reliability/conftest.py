"""Reliability fixtures: a migrated database per module, prices in Redis, the paper OMS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.testing.databases import create_database, drop_database

from .harness import oms_sim, seed_prices


@pytest.fixture
def migrated_dsn(database_url: str) -> Iterator[str]:
    """A new, migrated database private to one test (its counts and ledgers see only its own
    run); dropped WITH (FORCE) after."""
    name = f"sw_rel_{uuid.uuid4().hex[:16]}"
    asyncio.run(create_database(database_url, name))
    dsn = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        asyncio.run(drop_database(database_url, name))


@pytest.fixture
async def price_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A unique Redis key prefix holding fresh prices for the harness symbols."""
    prefix = f"sw-rel:{uuid.uuid4().hex[:8]}:prices:"
    await seed_prices(redis_client, prefix)
    yield prefix
    keys = [key async for key in redis_client.scan_iter(f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def oms_server() -> AsyncIterator[OmsSimServer]:
    """The paper OMS on a free loopback port (its order log is the test's witness)."""
    server = oms_sim()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await server.prices.close()
