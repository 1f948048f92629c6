"""The live stream hub: one follower, many clients, cursors that resume without gap or repeat.

A cursor is the source position *after* the last thing a client was sent: the next offset
per partition, written `0:124.1:88`. The hub keeps the most recent events in memory; a
client subscribing with a cursor gets every buffered event at or after it (filtered to what
it may see), then live events, in one order. Because the replay is copied and the client
registered in one step of the event loop, nothing falls between the two. Every frame carries
the cursor after it, and heartbeats carry the hub's current position, so a client that only
sees its own events still advances past everyone else's.

A cursor older than the buffer cannot be served without a gap: the client gets a `reset`
frame (reload the REST state, then continue live) instead of silently missing events. A
client whose queue overflows is dropped (`lagging`) and resumes from its last cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from strategy_worker.api.followers import EventFollower, FollowedEvent, Position
from strategy_worker.auth.tokens import Principal
from strategy_worker.log import get_logger
from strategy_worker.messages.jsonwire import isoformat_z

_log = get_logger(__name__)
HEARTBEAT_SLOTS = 10


def encode_cursor(position: Position) -> str:
    return ".".join(f"{p}:{o}" for p, o in sorted(position.items()))


def decode_cursor(text: str) -> Position | None:
    """`0:124.1:88` -> {0: 124, 1: 88}; None when malformed."""
    try:
        out: Position = {}
        for part in text.split("."):
            partition, offset = part.split(":")
            if int(partition) < 0 or int(offset) < 0:
                return None
            out[int(partition)] = int(offset)
        return out or None
    except ValueError:
        return None


class CursorExpired(Exception):
    """The cursor is older than the buffer (or than this hub's start)."""


@dataclass(eq=False)
class Client:
    """One subscriber: what it may see, and its bounded queue of frames."""

    principal: Principal
    execution_id: uuid.UUID | None
    queue: asyncio.Queue[str | None]
    lagging: bool = False
    #: Which tenth of the heartbeat interval this client's heartbeat falls in.
    slot: int = 0

    def wants(self, event: FollowedEvent) -> bool:
        if self.execution_id is not None and event.execution_id != self.execution_id:
            return False
        return self.principal.is_operator or event.user_id == self.principal.user_id

    def offer(self, frame: str) -> None:
        if self.lagging:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.lagging = True
            self.end()

    def end(self) -> None:
        """Make the reader stop after what it has (a None sentinel, room made for it)."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(None)


class StreamHub:
    """Follows one `EventFollower` and fans its events out to subscribed clients."""

    def __init__(
        self,
        follower: EventFollower,
        *,
        buffer_events: int = 50_000,
        client_queue: int = 2_000,
        heartbeat_s: float = 15.0,
    ) -> None:
        self._follower = follower
        self._buffer: deque[tuple[FollowedEvent, str]] = deque()
        self._max = buffer_events
        self._client_queue = client_queue
        self._heartbeat_s = heartbeat_s
        self._head: Position = {}
        #: Per partition, the first offset the buffer still holds (events below are gone).
        self._floor: Position = {}
        self._recent_ids: set[str] = set()
        self._clients: set[Client] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_slot = 0
        self.started = asyncio.Event()
        self.delivered = 0

    @property
    def source(self) -> str:
        return self._follower.name

    @property
    def cursor(self) -> str:
        return encode_cursor(self._head)

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self._head = dict(await self._follower.start())
        self._floor = dict(self._head)
        self._tasks = [
            asyncio.create_task(self._pump(), name="stream-pump"),
            asyncio.create_task(self._beat(), name="stream-heartbeat"),
        ]
        self.started.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._follower.close()
        for client in list(self._clients):
            client.end()

    async def _pump(self) -> None:
        """Follow the source for ever; a failure (database or broker away) is logged and
        retried with capped backoff from where the follower stood, so nothing is skipped."""
        delay = 0.1
        while True:
            try:
                async for event in self._follower.events():
                    self._publish(event)
                    delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("event follower failed; retrying", error=repr(exc), retry_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _publish(self, event: FollowedEvent) -> None:
        self._head[event.partition] = max(self._head.get(event.partition, 0), event.offset + 1)
        if event.event_id is not None:
            if event.event_id in self._recent_ids:
                return  # an at-least-once repeat of an event already sent
            self._recent_ids.add(event.event_id)
        frame = (
            f'{{"type": "event", "cursor": "{encode_cursor(self._head)}", "event": {event.raw}}}'
        )
        self._buffer.append((event, frame))
        while len(self._buffer) > self._max:
            old, _ = self._buffer.popleft()
            self._floor[old.partition] = old.offset + 1
            if old.event_id is not None:
                self._recent_ids.discard(old.event_id)
        for client in self._clients:
            if client.wants(event):
                client.offer(frame)
                self.delivered += 1

    async def _beat(self) -> None:
        """Each client gets a heartbeat every `heartbeat_s`, spread over ten slots: a
        thousand heartbeats at one instant would delay the events sent in that instant."""
        tick = 0
        while True:
            await asyncio.sleep(self._heartbeat_s / HEARTBEAT_SLOTS)
            tick = (tick + 1) % HEARTBEAT_SLOTS
            frame = self.heartbeat_frame()
            for client in list(self._clients):
                if client.slot == tick:
                    client.offer(frame)

    def heartbeat_frame(self) -> str:
        now = isoformat_z(datetime.now(UTC))
        return f'{{"type": "heartbeat", "cursor": "{self.cursor}", "at": "{now}"}}'

    def subscribe(
        self, principal: Principal, *, cursor: Position | None, execution_id: uuid.UUID | None
    ) -> tuple[Client, list[str]]:
        """Register a client; returns it and the buffered frames it must get first.
        Raises CursorExpired when `cursor` is older than what the hub still holds."""
        self._next_slot = (self._next_slot + 1) % HEARTBEAT_SLOTS
        client = Client(
            principal, execution_id, asyncio.Queue(self._client_queue), slot=self._next_slot
        )
        replay: list[str] = []
        if cursor is not None:
            for partition, offset in cursor.items():
                if offset < self._floor.get(partition, 0):
                    raise CursorExpired(partition)
            for event, frame in self._buffer:
                if event.offset >= cursor.get(event.partition, 0) and client.wants(event):
                    replay.append(frame)
        self._clients.add(client)
        return client, replay

    def unsubscribe(self, client: Client) -> None:
        self._clients.discard(client)

    async def frames(self, client: Client) -> AsyncIterator[str]:
        """The client's live frames until it lags or the hub closes."""
        while True:
            frame = await client.queue.get()
            if frame is None:
                return
            yield frame
