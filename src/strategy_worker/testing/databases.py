"""Scratch databases on a PostgreSQL server, for tests, the simulation's PostgreSQL variant
and the benchmarks: created empty, dropped WITH (FORCE) when done."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def create_database(database_url: str, name: str) -> None:
    """CREATE DATABASE name on the server of `database_url`."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(database_url: str, name: str, *, within_s: float = 30.0) -> None:
    """DROP DATABASE name WITH (FORCE), so connections left open cannot keep it alive.

    FORCE ends the other sessions in the database, which a role that is not a superuser may
    do only for its own: an autovacuum worker in the database (after many writes) makes
    PostgreSQL 15 refuse the drop (InsufficientPrivilegeError). It leaves soon, so the drop
    is retried until `within_s`.
    """
    deadline = time.monotonic() + within_s
    while True:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if time.monotonic() >= deadline:
                raise
        finally:
            await conn.close()
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def scratch_database(database_url: str, prefix: str) -> AsyncIterator[str]:
    """A new empty database named `prefix` + a random suffix; yields its URL, dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await create_database(database_url, name)
    try:
        yield with_database(database_url, name)
    finally:
        await drop_database(database_url, name)
