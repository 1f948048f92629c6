"""Virtual time: an asyncio event loop whose clock jumps to the next timer when idle.

Everything the runtime awaits — sleeps, timeouts, `wait_for` — runs on `loop.time()`, so on
this loop a day of trading passes in the milliseconds it takes to compute it, and the same
program with the same inputs runs the same way every time (no wall clock, no real I/O).
`VirtualClock` is the domain's clock on that loop: `now()` is `epoch + loop.time()`.

The loop refuses to wait forever: if nothing is ready and no timer is set, the program is
deadlocked, and `run_until_complete` raises `VirtualDeadlock` instead of hanging.

`RealIoVirtualTimeLoop` is the same clock over real sockets (the simulation against a real
PostgreSQL): file descriptors that are ready are always served first, and while a caller
has real I/O in flight (`with loop.real_io(): await ...`) virtual time stands still and the
loop waits for the sockets, so a round trip to the server takes no virtual time, however
long it takes in real time (a lease cannot expire under a commit because the machine is
busy). When nothing is in flight, idle waits advance virtual time at once, as on the plain
loop. Real servers answer with their own timing, so this variant does not promise an exact
replay; the plain loop, untouched by it, does.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Callable, Coroutine, Iterator
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


class RealIoStalled(RuntimeError):
    """Real I/O was in flight and no file descriptor became ready for `stall_limit` real
    seconds: the server stopped answering (the loop would otherwise wait forever)."""


class _RealIoSelector(selectors.DefaultSelector):
    """The platform's selector, waiting for real only while real I/O is in flight (see the
    module docstring); otherwise an idle wait of `timeout` advances virtual time by that."""

    loop: RealIoVirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        events = super().select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        if self.loop.io_in_flight:
            deadline = time.monotonic() + self.loop.stall_limit
            while not events:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RealIoStalled(
                        f"real I/O in flight and no answer for {self.loop.stall_limit} s"
                    )
                events = super().select(min(remaining, 1.0))
            return events
        if timeout is None:
            raise VirtualDeadlock("nothing is ready, no timer is set and no real I/O in flight")
        self.loop.advance(timeout)
        return []


class RealIoVirtualTimeLoop(VirtualTimeLoop):
    """Virtual time over real sockets (see the module docstring)."""

    def __init__(self, start: float = 0.0, *, stall_limit: float = 120.0) -> None:
        selector = _RealIoSelector()
        asyncio.SelectorEventLoop.__init__(self, selector)
        selector.loop = self
        self._now = start
        self.io_in_flight = 0
        """How many callers are waiting for real I/O now (virtual time stands still)."""
        self.stall_limit = stall_limit
        """Real seconds to wait for an answer before `RealIoStalled`."""

    @contextlib.contextmanager
    def real_io(self) -> Iterator[None]:
        """Hold virtual time still while the block waits for real I/O."""
        self.io_in_flight += 1
        try:
            yield
        finally:
            self.io_in_flight -= 1


def waiting_for_real_io(
    loop: asyncio.AbstractEventLoop | None = None,
) -> contextlib.AbstractContextManager[None]:
    """`loop.real_io()` on a `RealIoVirtualTimeLoop` (the running loop by default); on any
    other loop real time passes by itself and this does nothing."""
    loop = loop or asyncio.get_running_loop()
    if isinstance(loop, RealIoVirtualTimeLoop):
        return loop.real_io()
    return contextlib.nullcontext()


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


def run_in_virtual_time(
    main: Callable[[], Coroutine[Any, Any, T]], *, start: float = 0.0, real_io: bool = False
) -> T:
    """Run `main()` to completion on a fresh virtual-time loop (then close it); with
    `real_io`, on a `RealIoVirtualTimeLoop`."""
    loop = RealIoVirtualTimeLoop(start) if real_io else VirtualTimeLoop(start)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
