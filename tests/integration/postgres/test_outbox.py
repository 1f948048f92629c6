"""The transactional outbox on the real PostgreSQL: one relay leader among the stores,
leadership lost with its connection, gap-free publish numbering, bounded pruning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.outbox import OUTBOX_LEADER_LOCK
from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.errors import StoreError
from strategy_worker.store import OutboxEvent, OutboxLeadershipLostError

from .factories import commit_one, create, new_execution, outbox_event, step

pytestmark = pytest.mark.integration


@pytest.fixture
async def third_store(migrated_dsn: str) -> AsyncIterator[PostgresStore]:
    config = DatabaseConfig(url=migrated_dsn, pool_min_size=1, pool_max_size=2)
    opened = await PostgresStore.connect(config)
    try:
        yield opened
    finally:
        await opened.close()


async def _commit_events(store: PostgresStore, count: int) -> list[OutboxEvent]:
    """`count` events of one new execution, committed over two commits."""
    execution = new_execution()
    events = [
        outbox_event(execution, n, price=Decimal("175.50"), quantity=200) for n in range(count)
    ]
    record = await create(store, execution, events=events[: count // 2])
    await commit_one(store, step(record, events=events[count // 2 :]))
    return events


async def _drain(leader: PostgresStore) -> None:
    """Publish whatever earlier tests of the module left, so each test sees its own rows."""
    while rows := await leader.claim_outbox(limit=1000):
        await leader.mark_published([r.seq for r in rows])


async def _leader_pid(conn: asyncpg.Connection) -> int | None:
    pid = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1 AND objid = $2 AND objsubid = 1",
        OUTBOX_LEADER_LOCK >> 32,
        OUTBOX_LEADER_LOCK & 0xFFFF_FFFF,
    )
    return None if pid is None else int(pid)


async def _published(conn: asyncpg.Connection) -> list[tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT seq, published_seq FROM event_outbox WHERE published_seq IS NOT NULL "
        "ORDER BY published_seq"
    )
    return [(r["seq"], r["published_seq"]) for r in rows]


async def test_only_one_store_gets_rows_and_they_are_the_events_as_committed(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    await _drain(store)
    events = await _commit_events(store, 6)

    first = await store.claim_outbox(limit=100)
    second = await other_store.claim_outbox(limit=100)
    again = await store.claim_outbox(limit=4)

    assert [r.event for r in first] == events  # every field, payload decimals exact
    assert [r.seq for r in first] == sorted(r.seq for r in first)
    assert first[0].event.payload["price"] == Decimal("175.50")
    assert str(first[0].event.payload["price"]) == "175.50"
    assert second == []
    assert [r.seq for r in again] == [r.seq for r in first[:4]]  # unpublished: claimed again


async def test_a_store_that_is_not_the_leader_cannot_mark(
    store: PostgresStore, other_store: PostgresStore
) -> None:
    await _drain(store)
    await _commit_events(store, 2)
    rows = await store.claim_outbox(limit=10)

    with pytest.raises(OutboxLeadershipLostError) as caught:
        await other_store.mark_published([r.seq for r in rows])

    assert caught.value.retryable is False
    assert await other_store.claim_outbox(limit=10) == []
    assert [r.seq for r in await store.claim_outbox(limit=10)] == [r.seq for r in rows]


async def test_killing_the_leaders_connection_hands_the_outbox_to_another_store(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Arrange: `store` leads and has claimed a batch it has not marked yet.
    await _drain(store)
    events = await _commit_events(store, 4)
    claimed = await store.claim_outbox(limit=10)
    assert await other_store.claim_outbox(limit=10) == []
    pid = await _leader_pid(raw_conn)
    assert pid is not None

    # Act: an operator (or a network cut) ends the leader's session.
    assert await raw_conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(100):
        if await _leader_pid(raw_conn) is None:
            break
        await asyncio.sleep(0.05)
    taken = await other_store.claim_outbox(limit=10)

    # Assert: the other store leads from the oldest unpublished event; the old leader can
    # neither mark its stale batch nor get rows any more.
    assert [r.event for r in taken] == events
    with pytest.raises(OutboxLeadershipLostError):
        await store.mark_published([r.seq for r in claimed])
    assert await store.claim_outbox(limit=10) == []  # a new session, and not the leader
    await other_store.mark_published([r.seq for r in taken])
    assert await other_store.claim_outbox(limit=10) == []
    assert await _leader_pid(raw_conn) not in (None, pid)


async def test_closing_the_leader_releases_the_leadership_at_once(
    migrated_dsn: str, other_store: PostgresStore
) -> None:
    leader = await PostgresStore.connect(DatabaseConfig(url=migrated_dsn, pool_max_size=2))
    await _drain(leader)
    events = await _commit_events(leader, 2)
    assert [r.event for r in await leader.claim_outbox(limit=10)] == events

    await leader.close()

    assert [r.event for r in await other_store.claim_outbox(limit=10)] == events


async def test_published_seq_numbers_every_mark_gap_free_in_the_order_published(
    store: PostgresStore, other_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    await _drain(store)
    before = await _published(raw_conn)
    top = before[-1][1] if before else 0
    await _commit_events(store, 4)
    await _commit_events(other_store, 4)
    rows = await store.claim_outbox(limit=100)
    seqs = [r.seq for r in rows]
    order = seqs[4:] + seqs[:4]  # the relay may publish in another order than seq

    await store.mark_published(order[:5])
    await store.mark_published(order[3:])  # a retried mark overlapping the first
    await store.mark_published([])

    published = (await _published(raw_conn))[len(before) :]
    assert [seq for seq, _ in published] == order
    assert [n for _, n in published] == list(range(top + 1, top + 9))
    assert await store.claim_outbox(limit=100) == []


async def test_marking_a_seq_never_committed_marks_nothing(
    store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    await _drain(store)
    await _commit_events(store, 2)
    rows = await store.claim_outbox(limit=10)
    missing = max(r.seq for r in rows) + 1000

    with pytest.raises(StoreError, match="never in the outbox") as caught:
        await store.mark_published([rows[0].seq, missing])

    assert not isinstance(caught.value, OutboxLeadershipLostError)
    assert [r.seq for r in await store.claim_outbox(limit=10)] == [r.seq for r in rows]


async def test_prune_deletes_only_old_published_events_up_to_the_limit_keeping_the_last(
    store: PostgresStore, third_store: PostgresStore, raw_conn: asyncpg.Connection
) -> None:
    # Arrange: 6 published events, then 2 left unpublished; all older than `cutoff`.
    await _drain(store)
    await _commit_events(store, 6)
    await store.mark_published([r.seq for r in await store.claim_outbox(limit=100)])
    await _commit_events(store, 2)
    cutoff = datetime.now(UTC) + timedelta(seconds=5)
    total = await raw_conn.fetchval("SELECT count(*) FROM event_outbox")
    top = await raw_conn.fetchval("SELECT max(published_seq) FROM event_outbox")

    # Act
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    nothing_old = await store.prune_outbox(published_before=long_ago, limit=10)
    first = await store.prune_outbox(published_before=cutoff, limit=3)
    rest = await third_store.prune_outbox(published_before=cutoff, limit=1_000_000)
    again = await store.prune_outbox(published_before=cutoff, limit=1_000_000)

    # Assert: the bound held; every published row but the last went; unpublished stay.
    assert (nothing_old, first, again) == (0, 3, 0)
    left = await raw_conn.fetch("SELECT published_seq FROM event_outbox ORDER BY seq")
    assert total - len(left) == first + rest
    assert [r["published_seq"] for r in left] == [top, None, None]
    await store.mark_published([r.seq for r in await store.claim_outbox(limit=10)])
    assert [n for _, n in await _published(raw_conn)] == [top, top + 1, top + 2]


async def test_outbox_limits_must_be_positive(store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.claim_outbox(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await store.prune_outbox(published_before=datetime.now(UTC), limit=0)
