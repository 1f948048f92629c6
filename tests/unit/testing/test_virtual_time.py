"""`RealIoVirtualTimeLoop`: virtual time over real sockets (the simulation against a real
PostgreSQL). A socket pair stands in for the server; a thread answers it after a real
delay, as a busy server would."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from strategy_worker.testing.virtual_time import (
    RealIoStalled,
    RealIoVirtualTimeLoop,
    VirtualDeadlock,
    run_in_virtual_time,
    waiting_for_real_io,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def answer_after(peer: socket.socket, seconds: float) -> threading.Thread:
    """Answer one request on `peer` after `seconds` of real time."""

    def serve() -> None:
        request = peer.recv(16)
        time.sleep(seconds)
        peer.sendall(b"re:" + request)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_virtual_time_stands_still_while_real_io_is_in_flight(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    fired: list[float] = []

    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.001, lambda: fired.append(loop.time()))  # due during the round trip
        thread = answer_after(theirs, 0.05)
        with waiting_for_real_io():
            await loop.sock_sendall(ours, b"ping")
            reply = await loop.sock_recv(ours, 16)
        thread.join()
        return reply, loop.time()

    # Act
    reply, after = run_in_virtual_time(main, real_io=True)

    # Assert: the answer took 50 ms of real time and no virtual time; the timer due 1 ms
    # later waited for it
    assert reply == b"re:ping"
    assert after == 0.0
    assert fired == []


def test_idle_waits_advance_virtual_time_at_once_when_nothing_is_in_flight() -> None:
    async def main() -> float:
        await asyncio.sleep(3600)
        return asyncio.get_running_loop().time()

    started = time.monotonic()
    assert run_in_virtual_time(main, real_io=True) == 3600
    assert time.monotonic() - started < 5  # an hour of virtual time, not of real time


def test_ready_sockets_are_served_even_without_a_caller_waiting_in_flight(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        theirs.sendall(b"early")  # already there when the loop looks
        return await loop.sock_recv(ours, 16)

    assert run_in_virtual_time(main, real_io=True) == b"early"


def test_a_server_that_never_answers_is_reported_not_waited_for_forever(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    loop = RealIoVirtualTimeLoop(stall_limit=0.2)

    async def main() -> bytes:
        with waiting_for_real_io():
            return await loop.sock_recv(ours, 16)

    try:
        with pytest.raises(RealIoStalled):
            loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_deadlock_is_reported_when_nothing_can_happen() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(VirtualDeadlock):
        run_in_virtual_time(main, real_io=True)


def test_outside_the_real_io_loop_waiting_for_real_io_does_nothing() -> None:
    async def main() -> None:
        with waiting_for_real_io():
            await asyncio.sleep(0)

    asyncio.run(main())
