"""Spawning, guarding and failing, in one place.

`spawn` tracks background work (awaited or cancelled at shutdown); `loop` runs a periodic
body where a retryable error waits for the next round and any other error stops the
worker (logged with its traceback, never swallowed); `guard` runs one execution's work so
that its failure never disturbs another: a lost lease drops the execution, a transient
error of any dependency stays transient, anything else is a fault (`on_fault`: the
execution is closed by policy, never abandoned).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.store import LeaseLostError

_log = get_logger(__name__)
T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


class Supervisor:
    """Owns every task the worker starts besides the caller's own."""

    def __init__(
        self,
        *,
        on_fault: Callable[[ExecutionRunner, BaseException], Awaitable[None]],
        on_lost: Callable[[ExecutionRunner], Awaitable[None]],
    ) -> None:
        self._on_fault = on_fault
        self._on_lost = on_lost
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.stopping = False
        self.failure: BaseException | None = None
        self.failed_loop = ""
        self._failed = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run tracked background work; nothing new starts once shutdown began."""
        if self.stopping:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error("background task failed", task=task.get_name(), exc_info=exc)

    def loop(
        self,
        name: str,
        interval: float,
        body: Callable[[], Awaitable[object]],
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Run `body` every `interval` (slept with `sleep`, e.g. the paper clock's)."""

        async def run() -> None:
            while not self.stopping:
                await sleep(interval)
                if self.stopping:
                    return
                try:
                    await body()
                except StrategyWorkerError as exc:
                    if not exc.retryable:
                        raise
                    # A database restart or an OMS outage must not stop the worker.
                    _log.warning("cycle failed; retrying next cycle", loop=name, error=str(exc))

        self.watch(asyncio.create_task(run(), name=name))

    def watch(self, task: asyncio.Task[None]) -> None:
        """A long-lived task whose failure stops the worker."""
        self._loops.append(task)

        def ended(t: asyncio.Task[None]) -> None:
            if t.cancelled() or self.stopping:
                return
            exc = t.exception()
            if exc is not None and self.failure is None:
                self.failure = exc
                self.failed_loop = t.get_name()
                _log.error(
                    "background loop failed; stopping the worker", loop=t.get_name(), exc_info=exc
                )
                self._failed.set()

        task.add_done_callback(ended)

    async def wait_failure(self) -> BaseException:
        """Return the first loop failure (waits until there is one)."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    async def guard(self, runner: ExecutionRunner, work: Awaitable[T]) -> T | None:
        """Run one execution's work; see the module docstring for what each failure does."""
        try:
            return await work
        except LeaseLostError:
            _log.warning("lease lost; execution dropped", execution_id=str(runner.execution_id))
            await self._on_lost(runner)
        except StrategyWorkerError as exc:
            if not exc.retryable:
                await self._on_fault(runner, exc)
                return None
            _log.warning(
                "dependency unavailable; execution carries on",
                execution_id=str(runner.execution_id),
                error=str(exc)[:300],
                dirty=runner.dirty,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._on_fault(runner, exc)
        return None

    async def stop_loops(self) -> None:
        """Begin shutdown: no new work; the periodic loops are cancelled and awaited."""
        self.stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def abort(self) -> None:
        """Stop everything now: every loop and tracked task cancelled, nothing awaited
        beyond their cancellation (a forced quit; the next owner finishes the work)."""
        self.stopping = True
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, within: float) -> None:
        """Wait for tracked work up to `within` seconds, then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=max(0.0, within))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
