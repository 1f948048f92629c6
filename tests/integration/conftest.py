"""Fixtures on the real servers started by `scripts/services.sh up` (or given by env variables).

Settings come from the environment (DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS, PG_*) and
fall back to .services/env. With neither, a test needing a server FAILS and says to run
`scripts/services.sh up`: a missing server must never turn into a silently skipped suite.
Every client a fixture opens is closed at teardown.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from strategy_worker.testing.databases import create_database, drop_database

from .servers import (
    ENV_FILE,
    HOW_TO,
    PostgresControl,
    SharedKafka,
    load_services_env,
)


def _require_answering(var: str, host: str, port: int, source: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        pytest.fail(
            f"{var} from {source} points at {host}:{port}, which does not answer ({exc}); "
            f"check `scripts/services.sh status`, or {HOW_TO.format(var=var)}",
            pytrace=False,
        )


def _setting(var: str) -> tuple[str, str]:
    values, source = load_services_env()
    value = values.get(var)
    if not value:
        pytest.fail(
            f"{var} is not set and there is no {ENV_FILE}: {HOW_TO.format(var=var)}",
            pytrace=False,
        )
    return value, source


@pytest.fixture(scope="session")
def database_url() -> str:
    """postgresql://user:password@host:port/db of the test PostgreSQL (answering)."""
    url, source = _setting("DATABASE_URL")
    parts = urlsplit(url)
    _require_answering("DATABASE_URL", parts.hostname or "127.0.0.1", parts.port or 5432, source)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """redis://host:port/db of the test Redis (answering)."""
    url, source = _setting("REDIS_URL")
    parts = urlsplit(url)
    _require_answering("REDIS_URL", parts.hostname or "127.0.0.1", parts.port or 6379, source)
    return url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """host:port[,host:port] of the test Kafka (the first one answering)."""
    servers, source = _setting("KAFKA_BOOTSTRAP_SERVERS")
    host, _, port = servers.split(",")[0].strip().rpartition(":")
    _require_answering("KAFKA_BOOTSTRAP_SERVERS", host or "127.0.0.1", int(port), source)
    return servers


@pytest.fixture
async def pg_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the shared test database; closed after the test."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def fresh_database_url(database_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database just for this test (migrations start from nothing).

    Dropped at teardown WITH (FORCE), so connections a test forgot cannot keep it alive.
    """
    name = f"sw_test_{uuid.uuid4().hex[:16]}"
    await create_database(database_url, name)
    parts = urlsplit(database_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await drop_database(database_url, name)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A redis.asyncio client (decoded str replies); closed after the test.

    The server is shared by everything running against it: use unique keys, never FLUSHALL.
    """
    client = Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    try:
        yield client
    finally:
        await client.aclose()


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_topic(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    """Create uniquely named topics whose partitions all have a leader; deleted at teardown."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15000)
    await admin.start()
    created: list[str] = []

    async def make(prefix: str = "test", partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        response = await admin.create_topics([NewTopic(name, partitions, 1)])
        errors = [(topic, code) for topic, code, *_ in response.topic_errors if code != 0]
        assert not errors, f"creating topic {name} failed: {errors}"
        created.append(name)
        deadline = time.monotonic() + 20
        while True:
            (topic,) = await admin.describe_topics([name])
            leaders = [p["leader"] for p in topic["partitions"]]
            if topic["error_code"] == 0 and len(leaders) == partitions and min(leaders) >= 0:
                return name
            assert time.monotonic() < deadline, f"topic {name} has no leader after 20 s"
            await asyncio.sleep(0.1)

    try:
        yield make
    finally:
        try:
            if created:
                await admin.delete_topics(created)
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def fault_postgres() -> Iterator[PostgresControl]:
    """The session's private PostgreSQL behind `postgres_control` (session-scoped).

    To build module fixtures on it, override `database_url` in the test module:
        @pytest.fixture(scope="module")
        def database_url(fault_postgres: PostgresControl) -> str:
            return fault_postgres.url
    """
    control = PostgresControl.up(f"pg-faults-{os.getpid()}")
    try:
        yield control
    finally:
        control.down()


@pytest.fixture
def postgres_control(fault_postgres: PostgresControl) -> Iterator[PostgresControl]:
    """A private PostgreSQL (its URL: `postgres_control.url`) the test may stop and restart.

    One per pytest session, separate from DATABASE_URL's server; running again when each test
    ends, whatever happened. Its database is shared by the tests of the session: use unique ids.
    """
    yield fault_postgres
    if fault_postgres.pid is None:
        fault_postgres.start()


@pytest.fixture
async def kafka_control(kafka_bootstrap: str) -> AsyncIterator[SharedKafka]:
    """The harness's Kafka broker, which the test may stop and start; running again when the
    test ends, whatever happened. Skipped only when the broker was given from outside."""
    if not SharedKafka.managed_here():
        pytest.skip(
            f"Kafka at {kafka_bootstrap} was not started by this checkout's harness; "
            "a test must not stop a broker it does not own"
        )
    control = SharedKafka()
    try:
        yield control
    finally:
        if not control.running():
            await control.astart()
