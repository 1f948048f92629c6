"""The stream hub: cursors resume without gap or repeat, each client sees only its events,
repeats are dropped, an expired cursor is refused, a lagging client is cut off."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.api.followers import FollowedEvent, Position
from strategy_worker.api.stream import CursorExpired, StreamHub, decode_cursor, encode_cursor
from strategy_worker.auth.tokens import Principal, Role

ALICE = Principal(uuid.UUID(int=1), Role.USER)
BOB = Principal(uuid.UUID(int=2), Role.USER)
OPS = Principal(uuid.UUID(int=3), Role.OPERATOR)


def ev(partition: int, offset: int, user: Principal, event_id: str | None = None) -> FollowedEvent:
    raw = json.dumps({"p": partition, "o": offset})
    return FollowedEvent(partition, offset, raw, user.user_id, uuid.UUID(int=9), "t", event_id)


class FakeFollower:
    name = "fake"

    def __init__(self, start: Position) -> None:
        self._start = start
        self.queue: asyncio.Queue[FollowedEvent] = asyncio.Queue()

    async def start(self) -> Position:
        return dict(self._start)

    async def events(self) -> AsyncIterator[FollowedEvent]:
        while True:
            yield await self.queue.get()

    async def close(self) -> None:
        pass


def frames(replay: list[str]) -> list[tuple[int, int]]:
    return [(f["event"]["p"], f["event"]["o"]) for f in map(json.loads, replay)]


def publish(hub: StreamHub, *events: FollowedEvent) -> None:
    for e in events:
        hub._publish(e)


def test_cursor_text_round_trips_and_garbage_is_refused() -> None:
    assert decode_cursor(encode_cursor({0: 12, 2: 7})) == {0: 12, 2: 7}
    assert decode_cursor("0:-1") is None
    assert decode_cursor("x") is None


async def test_resuming_from_any_frames_cursor_gives_exactly_what_came_after() -> None:
    hub = StreamHub(FakeFollower({0: 0, 1: 0}), buffer_events=100)
    await hub.start()
    events = [ev(0, 0, ALICE), ev(1, 0, ALICE), ev(0, 1, BOB), ev(1, 1, ALICE), ev(0, 2, ALICE)]
    publish(hub, *events)
    mine = [(e.partition, e.offset) for e in events if e.user_id == ALICE.user_id]
    _, everything = hub.subscribe(ALICE, cursor={0: 0, 1: 0}, execution_id=None)
    cursors = [json.loads(f)["cursor"] for f in everything]

    for i, cursor in enumerate(cursors):
        _, rest = hub.subscribe(ALICE, cursor=decode_cursor(cursor), execution_id=None)
        assert frames(rest) == mine[i + 1 :]
    await hub.close()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.sampled_from([ALICE, BOB])), min_size=1, max_size=40),
    st.data(),
)
def test_a_reconnect_at_any_point_misses_nothing_and_repeats_nothing(
    plan: list[tuple[int, Principal]], data: st.DataObject
) -> None:
    async def run() -> None:
        hub = StreamHub(FakeFollower({0: 0, 1: 0, 2: 0}), buffer_events=1000, heartbeat_s=3600)
        await hub.start()
        offsets = {0: 0, 1: 0, 2: 0}
        events = []
        for partition, user in plan:
            events.append(ev(partition, offsets[partition], user))
            offsets[partition] += 1
        cut = data.draw(st.integers(0, len(events)))
        client, _ = hub.subscribe(ALICE, cursor={0: 0, 1: 0, 2: 0}, execution_id=None)
        publish(hub, *events[:cut])
        received = []
        cursor = hub.cursor
        while not client.queue.empty():
            frame = json.loads(client.queue.get_nowait())
            received.append((frame["event"]["p"], frame["event"]["o"]))
            cursor = frame["cursor"]
        # The heartbeat's cursor is as good as the last frame's.
        cursor = data.draw(st.sampled_from([cursor, json.loads(hub.heartbeat_frame())["cursor"]]))
        hub.unsubscribe(client)
        publish(hub, *events[cut:])
        _, replay = hub.subscribe(ALICE, cursor=decode_cursor(cursor), execution_id=None)
        received += frames(replay)
        expected = [(e.partition, e.offset) for e in events if e.user_id == ALICE.user_id]
        assert received == expected
        await hub.close()

    asyncio.run(run())


async def test_operators_see_all_users_their_own_and_execution_filters_apply() -> None:
    hub = StreamHub(FakeFollower({0: 0}))
    await hub.start()
    alice, _ = hub.subscribe(ALICE, cursor=None, execution_id=None)
    ops, _ = hub.subscribe(OPS, cursor=None, execution_id=None)
    other_execution, _ = hub.subscribe(OPS, cursor=None, execution_id=uuid.UUID(int=8))

    publish(hub, ev(0, 0, ALICE), ev(0, 1, BOB))

    assert (alice.queue.qsize(), ops.queue.qsize(), other_execution.queue.qsize()) == (1, 2, 0)
    await hub.close()


async def test_a_repeated_event_id_is_sent_once() -> None:
    hub = StreamHub(FakeFollower({0: 0}))
    await hub.start()
    client, _ = hub.subscribe(ALICE, cursor=None, execution_id=None)

    publish(hub, ev(0, 0, ALICE, "same"), ev(0, 1, ALICE, "same"), ev(0, 2, ALICE, "other"))

    assert client.queue.qsize() == 2
    assert hub.cursor == "0:3"
    await hub.close()


async def test_a_cursor_older_than_the_buffer_is_refused() -> None:
    hub = StreamHub(FakeFollower({0: 5}), buffer_events=100)
    await hub.start()
    publish(hub, *(ev(0, 5 + i, ALICE) for i in range(150)))

    with pytest.raises(CursorExpired):
        hub.subscribe(ALICE, cursor={0: 4}, execution_id=None)
    with pytest.raises(CursorExpired):
        hub.subscribe(ALICE, cursor={0: 54}, execution_id=None)
    _, replay = hub.subscribe(ALICE, cursor={0: 55}, execution_id=None)
    assert len(replay) == 100
    await hub.close()


async def test_a_client_that_falls_behind_is_cut_off_and_told_so() -> None:
    hub = StreamHub(FakeFollower({0: 0}), client_queue=10)
    await hub.start()
    client, _ = hub.subscribe(ALICE, cursor=None, execution_id=None)

    publish(hub, *(ev(0, i, ALICE) for i in range(20)))
    received = [f async for f in hub.frames(client)]

    assert client.lagging
    assert len(received) == 9  # what fitted, then the end
    await hub.close()


async def test_a_failing_follower_is_retried_from_where_it_stood() -> None:
    class Flaky(FakeFollower):
        def __init__(self) -> None:
            super().__init__({0: 0})
            self.calls = 0

        async def events(self) -> AsyncIterator[FollowedEvent]:
            self.calls += 1
            if self.calls == 1:
                yield ev(0, 0, ALICE)
                raise ConnectionError("database away")
            yield ev(0, 1, ALICE)
            await asyncio.Event().wait()

    hub = StreamHub(Flaky())
    await hub.start()
    client, _ = hub.subscribe(ALICE, cursor=None, execution_id=None)

    first = await asyncio.wait_for(client.queue.get(), 2)
    second = await asyncio.wait_for(client.queue.get(), 2)

    assert [json.loads(f or "")["event"]["o"] for f in (first, second)] == [0, 1]
    await hub.close()
