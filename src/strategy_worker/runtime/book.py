"""The one owner of this worker's executions: which runners it drives.

Every change of the set goes through `add`, `replace` and `remove`, which keep the
invariants together: the active-executions gauge, the symbol index the price watch reads,
and (on `remove` with `release`) the lease given back, once. No other module writes a
runner map. (Exposure is the fleet's, in the risk ledger: `runtime/exposure.py`.)
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from decimal import Decimal

from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.runtime.runner import ExecutionRunner

_log = get_logger(__name__)


class ExecutionBook:
    """Runners by execution id, indexed by the symbols they target or hold."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        release: Callable[[list[uuid.UUID]], Awaitable[object]],
    ) -> None:
        self._metrics = metrics
        self._release = release
        self._runners: dict[uuid.UUID, ExecutionRunner] = {}
        self._by_symbol: dict[str, dict[uuid.UUID, ExecutionRunner]] = {}
        self._symbols: dict[uuid.UUID, frozenset[str]] = {}
        self.version = 0
        """Grows on every change of the set (cheap change detection for readers)."""

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._runners)

    def __iter__(self) -> Iterator[ExecutionRunner]:
        return iter(list(self._runners.values()))

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._runners

    def get(self, execution_id: uuid.UUID) -> ExecutionRunner | None:
        return self._runners.get(execution_id)

    def is_current(self, runner: ExecutionRunner) -> bool:
        """True while `runner` is the one this worker drives for its execution."""
        return self._runners.get(runner.execution_id) is runner

    def ids(self) -> list[uuid.UUID]:
        return list(self._runners)

    def running(self) -> list[ExecutionRunner]:
        return [r for r in self._runners.values() if r.running and not r.dirty]

    def dirty(self) -> list[ExecutionRunner]:
        return [r for r in self._runners.values() if r.dirty]

    def user_ids(self) -> list[uuid.UUID]:
        """The users of the executions driven here (whose ledger totals matter)."""
        return sorted({r.info.user_id for r in self._runners.values()})

    def for_strategy(self, strategy_id: uuid.UUID) -> ExecutionRunner | None:
        for runner in self._runners.values():
            if runner.info.strategy_id == strategy_id and runner.running:
                return runner
        return None

    def touching(self, symbols: Iterable[str]) -> list[ExecutionRunner]:
        """Runners that target or hold any of `symbols`, each once, in a stable order."""
        found: dict[uuid.UUID, ExecutionRunner] = {}
        for symbol in symbols:
            for execution_id, runner in self._by_symbol.get(symbol, {}).items():
                found.setdefault(execution_id, runner)
        return [found[k] for k in sorted(found)]

    def refresh(self, runner: ExecutionRunner) -> None:
        """Re-index one runner's symbols after a commit or new marks."""
        execution_id = runner.execution_id
        if self._runners.get(execution_id) is not runner:
            return
        symbols = frozenset((*runner.info.targets, *runner.model.portfolio.positions))
        if symbols != self._symbols.get(execution_id):
            self._index(runner, symbols)

    def hold(self, runner: ExecutionRunner, exposure: Decimal) -> None:
        """What the risk ledger now holds for this runner's execution (after its commit, a
        quiet mark write or an audit's repair): the amount `FleetExposure` takes out of the
        fleet's total when this execution's next step is checked."""
        runner.ledger_exposure = exposure

    # ------------------------------------------------------------------ changing the set

    def add(self, runner: ExecutionRunner) -> None:
        """Drive this execution from now on (a new one, or one resumed)."""
        old = self._runners.get(runner.execution_id)
        if old is not None:
            self._unindex(old)
        self._runners[runner.execution_id] = runner
        self._changed()
        self.refresh(runner)

    def replace(self, old: ExecutionRunner, new: ExecutionRunner) -> bool:
        """Swap a reloaded runner in, only if `old` is still the current one."""
        if not self.is_current(old):
            return False
        self.add(new)
        return True

    async def remove(self, runner: ExecutionRunner, *, release: bool) -> bool:
        """Stop driving it; True when it was current. With `release` the lease is given
        back (handover, or a stop whose final write could not release it); without, the
        lease is already gone (lost to another worker, or released by the final commit)."""
        if not self._forget(runner):
            return False
        if release:
            with contextlib.suppress(StoreError):
                await self._release([runner.execution_id])
        return True

    async def remove_all(self, *, release: bool) -> list[uuid.UUID]:
        """Stop driving every execution (shutdown); returns their ids."""
        runners = list(self._runners.values())
        for runner in runners:
            self._forget(runner)
        ids = [r.execution_id for r in runners]
        if release and ids:
            with contextlib.suppress(StoreError):
                await self._release(ids)
        return ids

    def _forget(self, runner: ExecutionRunner) -> bool:
        if not self.is_current(runner):
            return False
        execution_id = runner.execution_id
        del self._runners[execution_id]
        self._unindex(runner)
        self._metrics.forget_execution(str(execution_id))
        self._changed()
        return True

    def _changed(self) -> None:
        self.version += 1
        self._metrics.executions_active.set(len(self._runners))

    def _index(self, runner: ExecutionRunner, symbols: frozenset[str]) -> None:
        self._unindex(runner)
        execution_id = runner.execution_id
        for symbol in symbols:
            self._by_symbol.setdefault(symbol, {})[execution_id] = runner
        self._symbols[execution_id] = symbols

    def _unindex(self, runner: ExecutionRunner) -> None:
        execution_id = runner.execution_id
        for symbol in self._symbols.pop(execution_id, frozenset()):
            bucket = self._by_symbol.get(symbol)
            if bucket is not None and bucket.get(execution_id) is not None:
                del bucket[execution_id]
                if not bucket:
                    del self._by_symbol[symbol]
