"""Virtual time: an asyncio event loop whose clock jumps to the next timer when idle.

Everything the runtime awaits — sleeps, timeouts, `wait_for` — runs on `loop.time()`, so on
this loop a day of trading passes in the milliseconds it takes to compute it, and the same
program with the same inputs runs the same way every time (no wall clock, no real I/O).
`VirtualClock` is the domain's clock on that loop: `now()` is `epoch + loop.time()`.

The loop refuses to wait forever: if nothing is ready and no timer is set, the program is
deadlocked, and `run_until_complete` raises `VirtualDeadlock` instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualDeadlock(RuntimeError):
    """Nothing is ready and nothing is scheduled: the program can never make progress."""


class _IdleSelector(selectors.BaseSelector):
    """Registers file objects (the loop's self-pipe) but never waits on them: a wait of
    `timeout` seconds advances virtual time by exactly that."""

    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self._map.pop(fileobj, None)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise VirtualDeadlock("nothing is ready and no timer is set")
        if timeout > 0:
            self.loop.advance(timeout)
        return []

    def close(self) -> None:
        self._map.clear()

    def get_map(self) -> Any:
        return self._map


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual seconds (see the module docstring)."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _IdleSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = start

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class VirtualClock:
    """The domain's clock on a virtual-time loop (also `sleep` in the same seconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, epoch: datetime) -> None:
        if epoch.tzinfo is None:
            raise ValueError("epoch must be timezone-aware")
        self._loop = loop
        self._epoch = epoch.astimezone(UTC)

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self._loop.time())

    def timestamp(self) -> float:
        return self._epoch.timestamp() + self._loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def run_in_virtual_time(main: Callable[[], Coroutine[Any, Any, T]], *, start: float = 0.0) -> T:
    """Run `main()` to completion on a fresh virtual-time loop (then close it)."""
    loop = VirtualTimeLoop(start)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
