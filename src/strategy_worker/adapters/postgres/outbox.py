"""The outbox side of `PostgresStore`: one relay leader in the fleet claims the committed
events, marks them published in the order it published them, and prunes old ones.

Leadership is a session-level advisory lock held by a connection of the store's own, not
from the pool: PostgreSQL releases it when that session ends (the process died, the
connection broke, or an operator terminated it), and the next store to ask takes over.
The leader claims and marks on that same connection, so rows are only ever handed out, and
numbered, by a session that holds the lock at that moment. TCP keepalives on it bound how
long a vanished leader's half-open session can keep the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg

from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.adapters.postgres.base import StoreBase
from strategy_worker.adapters.postgres.connect import is_unreachable, to_store_error
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.store import OutboxLeadershipLostError, OutboxRow

_log = get_logger(__name__)

OUTBOX_LEADER_LOCK = 0x5357_4F55_5442_4F58  # "SWOUTBOX"; one relay leader per database
"""The advisory lock key of the relay leadership (any constant, the same fleet-wide)."""

ConnectOne = Callable[[], Awaitable[asyncpg.Connection]]
"""Opens one connection configured like the pool's (codecs, timeouts), outside the pool."""


class OutboxQueries(StoreBase):
    """`claim_outbox`, `mark_published` and `prune_outbox` (part of `PostgresStore`)."""

    _connect_one: ConnectOne
    _leader: asyncpg.Connection | None
    """The dedicated connection (open while this store competes for leadership)."""
    _is_leader: bool
    _leader_guard: asyncio.Lock
    """One operation at a time on the dedicated connection."""

    def _init_outbox(self, connect_one: ConnectOne) -> None:
        self._connect_one = connect_one
        self._leader = None
        self._is_leader = False
        self._leader_guard = asyncio.Lock()

    @property
    def is_outbox_leader(self) -> bool:
        """Whether this store held the relay leadership at its last outbox call."""
        return self._is_leader

    async def claim_outbox(self, *, limit: int) -> list[OutboxRow]:
        """Up to `limit` unpublished events by seq while this store is the relay leader;
        [] while another store is. Leadership is sought again at every call; a broken
        dedicated connection loses it (StoreError, retryable: call again)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self._leader_guard:
            conn = await self._lead()
            if conn is None:
                return []
            try:
                rows = await conn.fetch(Q.CLAIM_OUTBOX, limit)
            except Exception as exc:
                raise self._leader_failed(exc, "claim_outbox") from exc
        return [R.outbox_from_row(r) for r in rows]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        """Number the still unpublished `seqs`, in this order, after the highest
        published_seq, with published_at = now(); seqs already published are skipped.
        OutboxLeadershipLostError when this store is not the leader (or stops being it
        during the call: nothing marked); StoreError (not retryable) for a seq that was
        never in the outbox (nothing marked)."""
        if not seqs:
            return
        if len(set(seqs)) != len(seqs):
            raise ValueError("mark_published got a seq twice")
        async with self._leader_guard:
            conn = self._leader
            if conn is None or conn.is_closed() or not self._is_leader:
                self._drop_leader()
                raise OutboxLeadershipLostError(
                    "mark_published: this store is not the relay leader"
                )
            try:
                async with conn.transaction():
                    rows = await conn.fetch(Q.MARK_PUBLISHED, list(seqs))
                    unknown = [r["seq"] for r in rows if not r["known"]]
                    if unknown:
                        raise StoreError(
                            f"mark_published: seq(s) {unknown[:5]} were never in the outbox"
                        )
            except StoreError:
                raise
            except Exception as exc:
                raise self._leader_failed(exc, "mark_published", lost_is_fatal=True) from exc

    async def prune_outbox(self, *, published_before: datetime, limit: int) -> int:
        """Delete up to `limit` events published before the instant, oldest first; the
        last published event always stays (published_seq continues from it). Any store may
        prune; concurrent pruners skip each other's rows."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self._conn("prune_outbox") as conn:
            deleted = await conn.fetchval(Q.PRUNE_OUTBOX, published_before, limit)
        return int(deleted)

    async def close(self) -> None:
        """Give up the leadership (closing the dedicated connection ends its session), then
        close the pool; idempotent."""
        async with self._leader_guard:
            conn, self._leader, self._is_leader = self._leader, None, False
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), timeout=5)
                except Exception:  # closing anyway: the session ends with the socket
                    conn.terminate()
        await super().close()

    # ------------------------------------------------------------------ leadership

    async def _lead(self) -> asyncpg.Connection | None:
        """The dedicated connection if this store holds the leadership (trying to take it
        now if not), else None."""
        if self._closed:
            raise StoreError("the store is closed")
        conn = self._leader
        if conn is not None and conn.is_closed():
            self._drop_leader()
            conn = None
        if conn is None:
            try:
                conn = await self._connect_one()
            except Exception as exc:
                raise to_store_error(exc, "claim_outbox (connecting)") from exc
            self._leader = conn
        if self._is_leader:
            return conn
        try:
            self._is_leader = bool(await conn.fetchval(Q.TRY_OUTBOX_LEADERSHIP, OUTBOX_LEADER_LOCK))
        except Exception as exc:
            raise self._leader_failed(exc, "claim_outbox (leadership)") from exc
        if self._is_leader:
            _log.info("outbox relay leadership taken")
            return conn
        return None

    def _leader_failed(
        self, exc: Exception, operation: str, *, lost_is_fatal: bool = False
    ) -> StoreError:
        """The error for a failure on the dedicated connection; a broken connection means
        the session (and the lock) is gone: drop it, the next claim starts over."""
        if isinstance(exc, StoreError):
            return exc
        conn = self._leader
        broken = conn is None or conn.is_closed() or is_unreachable(exc)
        if not broken:
            return to_store_error(exc, operation)
        was_leader = self._is_leader
        self._drop_leader()
        if was_leader:
            _log.warning("outbox relay leadership lost with its connection", operation=operation)
        if lost_is_fatal:
            return OutboxLeadershipLostError(
                f"{operation}: the relay leadership was lost with its connection"
            )
        return to_store_error(exc, operation)

    def _drop_leader(self) -> None:
        conn, self._leader, self._is_leader = self._leader, None, False
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                conn.terminate()
