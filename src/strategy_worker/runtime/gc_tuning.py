"""Garbage collection for a long-running worker: full collections that do not stall it.

CPython's full (generation 2) collection scans every tracked object. A worker with
thousands of executions holds millions of them, and each full collection then holds the
event loop for 0.3-1.3 s: the longest stall the bench measured (bench/storm.py reports
every collection of its window). `GcPolicy.install()` freezes what survives each full
collection (`gc.freeze`: frozen objects are not scanned again), so the next one only scans
what was allocated since. Cyclic garbage among frozen objects would stay, so every
`thaw_interval` seconds `thaw()` unfreezes and collects everything once: one long pause
at a known, rare cadence instead of several a minute under load. Young collections run
every 20,000 allocations instead of 700 (`THRESHOLDS`).

Process-wide: the production entry point (`runtime/app.py`) installs it, and so does the
bench's worker process; tests (many workers in one process) do not.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

THAW_INTERVAL_S = 900.0
"""How often everything frozen is unfrozen and collected (cyclic garbage is freed)."""
THRESHOLDS = (20_000, 20, 20)
"""Allocations before a young collection (CPython: 700), and young/middle collections
before the next older one (10, 10): fewer, larger collections of short-lived objects that
mostly died by refcount already."""


class GcPolicy:
    """Freeze after full collections; thaw and collect everything every interval."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._installed = False
        self._defaults: tuple[int, ...] = gc.get_threshold()
        self.frozen_after = 0
        """Full collections whose survivors were frozen."""

    @classmethod
    def install(cls) -> GcPolicy:
        """Freeze what exists now and after every full collection (call in the loop)."""
        policy = cls(asyncio.get_running_loop())
        policy._defaults = gc.get_threshold()
        gc.set_threshold(*THRESHOLDS)
        gc.freeze()
        gc.callbacks.append(policy._after_collection)
        policy._installed = True
        return policy

    def uninstall(self) -> None:
        """Back to CPython's defaults: nothing frozen, no callback."""
        if self._installed:
            gc.callbacks.remove(self._after_collection)
            gc.set_threshold(*self._defaults)
            self._installed = False
        gc.unfreeze()

    def thaw(self) -> None:
        """Unfreeze, collect everything once (the rare long pause), freeze the survivors."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    async def thaw_forever(self, interval: float = THAW_INTERVAL_S) -> None:
        """Until cancelled: `thaw()` every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            self.thaw()

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2 and not self._loop.is_closed():
            # After the collection, in the loop (a collection may run in any thread).
            self.frozen_after += 1
            self._loop.call_soon_threadsafe(self._freeze)

    def _freeze(self) -> None:
        if self._installed:  # not after an uninstall that came in between
            gc.freeze()
