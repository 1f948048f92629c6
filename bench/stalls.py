"""Who stalled the worker's event loop: every stall of a phase, named.

Runs inside the bench's worker process (harness._worker_main). A probe task wakes every
10 ms and records each wake-up that came more than 5 ms late, with the CPU time the loop's
thread used meanwhile; the garbage collections (gc.callbacks) and the spans of the
runtime's periodic and batch work (wrapped on the built worker) are recorded with their
times. `attribute` then names each stall, first match wins:

- `gc`: collections took at least half of it;
- `descheduled`: the thread used under half the stall's time on CPU (another process had
  the core: the two cores are shared with PostgreSQL, Kafka, the OMS and other tenants);
- the runtime work that was running during it (`monitor`, `reconcile`, `leases`,
  `relay`, `reports`, `intake`, `answers`...);
- `other`: synchronous work outside those spans (the consumer's decoding, gRPC, ...).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

PROBE_S = 0.010
STALL_S = 0.005


class StallProbe:
    """Stalls, GC pauses and work spans of one worker process (see the module docstring)."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float, float]] = []
        """(start, lag seconds, thread CPU seconds used meanwhile)."""
        self.gcs: list[tuple[float, float, int]] = []
        """(start, seconds, generation)."""
        self.spans: list[tuple[str, float, float]] = []
        """(name, start, end) of the wrapped runtime work."""
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.gcs.append((self._gc_started, now - self._gc_started, int(info["generation"])))

    async def run(self) -> None:
        while True:
            due = time.perf_counter() + PROBE_S
            cpu = time.thread_time()
            await asyncio.sleep(PROBE_S)
            lag = time.perf_counter() - due
            if lag > STALL_S:
                self.stalls.append((due, lag, time.thread_time() - cpu))

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Record every call of `owner.attribute` (a coroutine function) as a span."""
        inner: Callable[..., Awaitable[Any]] = getattr(owner, attribute)
        spans = self.spans

        async def spanned(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                spans.append((name, started, time.perf_counter()))
                if len(spans) > 200_000:
                    del spans[:100_000]

        setattr(owner, attribute, spanned)

    def instrument(self, worker: Any) -> None:
        """Spans on the runtime's periodic and batch work of a built worker (before start:
        the loops bind their bodies when they start)."""
        self.wrap(worker.monitor, "cycle", "monitor")
        self.wrap(worker.monitor, "on_prices", "price-update")
        self.wrap(worker.monitor, "rebalance_cycle", "rebalance")
        self.wrap(worker.reconciler, "cycle", "reconcile")
        self.wrap(worker.reconciler, "apply_reports", "reports")
        self.wrap(worker.leases, "cycle", "leases")
        self.wrap(worker.leases, "reload_dirty", "reload")
        self.wrap(worker.relay, "relay_once", "relay")
        self.wrap(worker.intake, "admit", "intake")
        self.wrap(worker.engine.submitter, "_send", "answers")

    def snapshot(self) -> dict[str, Any]:
        return {"stalls": list(self.stalls), "gcs": list(self.gcs), "spans": list(self.spans)}


def attribute(before: dict[str, Any], after: dict[str, Any], *, window_s: float) -> dict[str, Any]:
    """The stalls of the window between two snapshots, named and summed by cause: how many,
    the stalled seconds, the longest, and the share of the window they took."""
    start = max((s[0] for s in before["stalls"]), default=0.0)
    stalls = [s for s in after["stalls"] if s[0] > start]
    gcs = after["gcs"]
    spans = after["spans"]
    causes: dict[str, dict[str, float]] = {}
    for due, lag, cpu in stalls:
        end = due + lag
        cause = "other"
        in_gc = sum(
            min(end, g0 + d) - max(due, g0) for g0, d, _ in gcs if g0 < end and g0 + d > due
        )
        if in_gc >= lag / 2:
            cause = "gc"
        elif cpu < lag / 2:
            cause = "descheduled"
        else:
            running = [n for n, s0, s1 in spans if s0 < end and s1 > due]
            if running:
                cause = "+".join(sorted(set(running)))
        entry = causes.setdefault(cause, {"count": 0, "seconds": 0.0, "max_ms": 0.0})
        entry["count"] += 1
        entry["seconds"] += lag
        entry["max_ms"] = max(entry["max_ms"], lag * 1000)
    for entry in causes.values():
        entry["seconds"] = round(entry["seconds"], 3)
        entry["max_ms"] = round(entry["max_ms"], 1)
        entry["share_of_window"] = round(entry["seconds"] / max(window_s, 1e-9), 4)
    return dict(sorted(causes.items(), key=lambda kv: -kv[1]["seconds"]))
