"""Fault switches for tests and drills: refuse calls, stall them, drop report streams."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(slots=True)
class _Stall:
    seconds: float | None
    calls_left: int | None
    after_processing: bool
    cleared: asyncio.Event


class FaultSwitches:
    """Switches the simulator checks on every call; flip them from a test at any time."""

    def __init__(self) -> None:
        self.refusing = False
        self._stall: _Stall | None = None
        self._drop_generation = 0
        self._drop_listeners: set[asyncio.Event] = set()
        self._submit_drop_listeners: set[asyncio.Event] = set()

    def refuse(self, on: bool = True) -> None:
        """While on, every call fails with UNAVAILABLE, as if the venue were down."""
        self.refusing = on

    def stall(
        self,
        *,
        seconds: float | None = None,
        calls: int | None = None,
        after_processing: bool = False,
    ) -> None:
        """Hold calls for `seconds` (None = until `clear_stall()`), for the next `calls` calls.

        With `after_processing`, the call does its work first and then holds its answer:
        the case where a client times out although the OMS did accept the order.
        """
        self.clear_stall()
        self._stall = _Stall(seconds, calls, after_processing, asyncio.Event())

    def clear_stall(self) -> None:
        if self._stall is not None:
            self._stall.cleared.set()
        self._stall = None

    def drop_streams(self) -> None:
        """End every open report stream with UNAVAILABLE (clients must resume)."""
        self._drop_generation += 1
        for listener in self._drop_listeners:
            listener.set()

    def drop_submit_streams(self) -> None:
        """End every open SubmitOrders stream with UNAVAILABLE: what was sent on it and not
        answered yet may or may not have been processed (clients resubmit, idempotently)."""
        for listener in self._submit_drop_listeners:
            listener.set()

    def listen_for_submit_drops(self) -> asyncio.Event:
        event = asyncio.Event()
        self._submit_drop_listeners.add(event)
        return event

    def forget_submit(self, event: asyncio.Event) -> None:
        self._submit_drop_listeners.discard(event)

    @property
    def drop_generation(self) -> int:
        return self._drop_generation

    def listen_for_drops(self) -> asyncio.Event:
        event = asyncio.Event()
        self._drop_listeners.add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        self._drop_listeners.discard(event)

    async def hold(self, *, after_processing: bool) -> None:
        """Wait here if a stall for this phase of the call is active."""
        stall = self._stall
        if stall is None or stall.after_processing != after_processing:
            return
        if stall.calls_left is not None:
            if stall.calls_left <= 0:
                return
            stall.calls_left -= 1
        try:
            await asyncio.wait_for(stall.cleared.wait(), timeout=stall.seconds)
        except TimeoutError:
            return
