"""The live stream: the caller's events only, resumed from a cursor with no gap and no
duplicate, a heartbeat, and a reset instead of a silent gap; from the outbox (paper mode) and
from Kafka (production)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import websockets
from aiokafka import AIOKafkaProducer

from strategy_worker.api.followers import KafkaFollower
from strategy_worker.api.server import RunningApi, api_service
from strategy_worker.config import WorkerConfig

from ..conftest import TopicFactory
from .conftest import OPERATOR, OTHER, OWNER, Seeded, Tokens


def event(execution_id: uuid.UUID, user: uuid.UUID, n: int) -> dict[str, Any]:
    return {
        "type": "strategy.execution.order_filled",
        "execution_id": str(execution_id),
        "user_id": str(user),
        "n": n,
        "price": Decimal("175.50"),
    }


class Outbox:
    """Writes events as the lead's relay will: payload, then a gap-free published_seq."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seq = 0

    async def publish(self, *events: dict[str, Any]) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            for payload in events:
                self.seq += 1
                text = json.dumps(payload, default=str).replace('"175.50"', "175.50")
                await conn.execute(
                    """INSERT INTO event_outbox (event_id, execution_id, user_id, key,
                       event_type, payload, published_seq, published_at)
                       VALUES ($1, $2, $3, 'k', $4, $5::jsonb, $6, now())""",
                    uuid.uuid4(),
                    uuid.UUID(payload["execution_id"]),
                    uuid.UUID(payload["user_id"]),
                    payload["type"],
                    text,
                    self.seq,
                )
        finally:
            await conn.close()


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.cursor: str | None = None

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), within), parse_float=Decimal)
        if "cursor" in frame:
            self.cursor = frame["cursor"]
        return frame

    async def events(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < count:
            frame = await self.next(within)
            if frame["type"] == "event":
                out.append(frame["event"])
        return out


async def connect(api: RunningApi, token: str, **subscribe: Any) -> Client:
    ws = await websockets.connect(api.url.replace("http", "ws") + "/api/v1/stream")
    await ws.send(json.dumps({"type": "subscribe", "token": token, **subscribe}))
    client = Client(ws)
    hello = await client.next()
    assert hello["type"] in ("hello", "reset"), hello
    client.hello = hello  # type: ignore[attr-defined]
    return client


async def test_outbox_stream_resumes_after_a_reconnect_without_gap_or_duplicate(
    api: RunningApi, seeded: Seeded, tokens: Tokens, api_db: str
) -> None:
    outbox = Outbox(api_db)
    first = await connect(api, tokens(OWNER))
    await outbox.publish(*(event(seeded.own, OWNER, n) for n in range(3)))
    got = await first.events(3)
    cursor = first.cursor
    await first.ws.close()
    # While the client is away: its events and another user's.
    await outbox.publish(
        event(seeded.own, OWNER, 3), event(seeded.others, OTHER, 99), event(seeded.own, OWNER, 4)
    )
    await asyncio.sleep(0.3)
    again = await connect(api, tokens(OWNER), cursor=cursor)
    await outbox.publish(event(seeded.own, OWNER, 5))
    got += await again.events(3)

    assert [e["n"] for e in got] == [0, 1, 2, 3, 4, 5]
    assert got[0]["price"] == Decimal("175.50")
    assert again.hello["cursor"] == cursor  # type: ignore[attr-defined]
    await again.ws.close()


async def test_each_client_sees_only_what_it_may_and_heartbeats_advance_the_cursor(
    api: RunningApi, seeded: Seeded, tokens: Tokens, api_db: str
) -> None:
    outbox = Outbox(api_db)
    other = await connect(api, tokens(OTHER))
    operator = await connect(api, tokens(OPERATOR, operator=True))
    one = await connect(api, tokens(OWNER), execution_id=str(seeded.own))
    await outbox.publish(event(seeded.own, OWNER, 1), event(seeded.others, OTHER, 2))

    assert [e["n"] for e in await operator.events(2)] == [1, 2]
    assert [e["n"] for e in await other.events(1)] == [2]
    assert [e["n"] for e in await one.events(1)] == [1]
    beat = await one.next(within=3)
    assert beat["type"] == "heartbeat"
    assert beat["cursor"] == "0:3"  # past the other user's event too
    for client in (other, operator, one):
        await client.ws.close()


async def test_unauthorized_or_foreign_subscriptions_are_closed(
    api: RunningApi, seeded: Seeded, tokens: Tokens
) -> None:
    url = api.url.replace("http", "ws") + "/api/v1/stream"
    cases = [
        ({"type": "subscribe", "token": "garbage"}, 4401),
        ({"type": "subscribe", "token": tokens(OTHER), "execution_id": str(seeded.own)}, 4404),
        ({"type": "subscribe", "token": tokens(OWNER), "cursor": "nonsense"}, 4400),
    ]
    for message, code in cases:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(message))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == code


async def test_a_cursor_older_than_the_buffer_gets_a_reset_not_a_gap(
    api: RunningApi, tokens: Tokens
) -> None:
    client = await connect(api, tokens(OWNER), cursor="0:0")

    assert client.hello["type"] == "reset"  # type: ignore[attr-defined]
    await client.ws.close()


@pytest.fixture
async def kafka_api(
    api_config: WorkerConfig, seeded: Seeded, make_topic: TopicFactory, kafka_bootstrap: str
) -> AsyncIterator[tuple[RunningApi, str]]:
    topic = await make_topic("api.execution", partitions=3)
    follower = KafkaFollower(api_config.kafka, topic=topic)
    async with api_service(api_config, follower=follower, port=0) as running:
        yield running, topic


async def test_kafka_stream_resumes_across_partitions_and_drops_repeated_event_ids(
    kafka_api: tuple[RunningApi, str], seeded: Seeded, tokens: Tokens, kafka_bootstrap: str
) -> None:
    api, topic = kafka_api
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()

    async def send(n: int, *, event_id: str | None = None) -> None:
        payload = json.dumps(event(seeded.own, OWNER, n), default=str).encode()
        headers = [("event-id", (event_id or str(uuid.uuid4())).encode())]
        await producer.send_and_wait(topic, payload, key=f"k{n}".encode(), headers=headers)

    try:
        first = await connect(api, tokens(OWNER))
        for n in range(4):
            await send(n)
        got = await first.events(4)
        await first.ws.close()
        await send(4, event_id="same")
        await send(4, event_id="same")  # an at-least-once repeat
        await send(5)
        await asyncio.sleep(0.5)
        again = await connect(api, tokens(OWNER), cursor=first.cursor)
        got += await again.events(2)
        with pytest.raises(TimeoutError):
            # Nothing more (heartbeats aside): the repeat was dropped.
            await asyncio.wait_for(again.events(1), 1.5)
        await again.ws.close()
    finally:
        await producer.stop()

    assert sorted(e["n"] for e in got) == [0, 1, 2, 3, 4, 5]


async def test_the_outbox_follower_waits_for_its_table_and_then_reads_it_from_the_start(
    fresh_database_url: str,
) -> None:
    from strategy_worker.api.followers import OutboxFollower

    from .conftest import OUTBOX_DDL

    pool = await asyncpg.create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        follower = OutboxFollower(pool, poll_interval=0.02)
        assert await follower.start() == {0: 1}  # no table yet
        events = follower.events()
        pending = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.2)
        await pool.execute(OUTBOX_DDL)
        await Outbox(fresh_database_url).publish(event(uuid.uuid4(), OWNER, 7))
        first = await asyncio.wait_for(pending, 5)
        await follower.close()
        await events.aclose()
    finally:
        await pool.close()

    assert (first.offset, json.loads(first.raw)["n"]) == (1, 7)
