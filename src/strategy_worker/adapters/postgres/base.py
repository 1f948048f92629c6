"""The pool plumbing every part of `PostgresStore` stands on: transactions, plain
connections, driver errors turned into `StoreError`, ping and close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import asyncpg

from strategy_worker.adapters.postgres.connect import to_store_error
from strategy_worker.errors import StoreError


class StoreBase:
    """An asyncpg pool and the two ways the store's queries use it."""

    def __init__(self, pool: asyncpg.Pool, *, where: str) -> None:
        self._pool = pool
        self._where = where
        self._closed = False

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, for a component that shares it (the market data of the signals)."""
        return self._pool

    @asynccontextmanager
    async def _tx(self, operation: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction; driver errors become StoreError."""
        async with self._conn(operation) as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _conn(self, operation: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection without an explicit transaction, for reads and single
        statements (each is atomic on its own; BEGIN/COMMIT would be two more round trips)."""
        try:
            async with self._pool.acquire() as conn:
                try:
                    yield conn
                except asyncpg.exceptions.InternalClientError:
                    _drop(conn)
                    raise
        except StoreError:
            raise
        except Exception as exc:
            raise to_store_error(exc, operation) from exc

    async def ping(self) -> bool:
        """True when the database answers within the command timeout."""
        try:
            async with self._conn("ping") as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except StoreError:
            return False

    async def close(self) -> None:
        """Close the pool (waits for connections in use to be released); idempotent."""
        if not self._closed:
            self._closed = True
            await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _drop(conn: asyncpg.Connection) -> None:
    """Close a connection whose protocol state broke (the server went away mid-answer), so
    the pool never hands it out again; the pool opens a new one."""
    conn.terminate()
