"""What a variant of the simulation plugs into it (`Simulation(config, hooks=...)`): the
PostgreSQL variant (`postgres_variant.py`) wraps every worker's store and compares the two
stores after every step. The plain simulation has none and runs exactly as without."""

from __future__ import annotations

from typing import Protocol

from strategy_worker.store import Store
from strategy_worker.testing.memory_store import MemoryDatabase, MemoryStore


class SimHooks(Protocol):
    async def attach(self, db: MemoryDatabase) -> None:
        """Before any worker starts: the run's in-memory database."""
        ...

    def wrap(self, store: MemoryStore) -> Store:
        """The store a worker gets instead of its memory handle."""
        ...

    async def settle(self) -> None:
        """Before the invariants are checked: until no worker is inside a store call that
        the memory store already answered (the workers have caught up with it)."""
        ...

    async def check(self, *, full: bool = False) -> list[str]:
        """After every step (with all invariants held): what is wrong ([] when nothing);
        `full` at the end (slower checks)."""
        ...
