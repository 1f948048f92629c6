"""The slower variant of the simulation: the same seeded scenario, with every store call
the in-memory store applies made again on the real PostgreSQL store (`postgres_mirror.py`),
and after every step, besides every invariant, a comparison of what the two stores hold.

    python -m strategy_worker.testing.simulation --postgres --seed 1 --steps 300

Each seed gets a database of its own on the server of the DSN (`DATABASE_URL` by default),
created, migrated, given the simulation's clock, and dropped afterwards (kept when the seed
fails, and named in the failure, to look at). The run is on `RealIoVirtualTimeLoop`:
virtual time stands still while PostgreSQL answers, so the scenario unfolds in virtual
time as on the memory store, but the server's real timing can change the order in which
ready tasks run: a seed is not guaranteed to replay exactly in this variant (the memory
variant's exact replay is untouched by it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import asyncpg

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import Store
from strategy_worker.testing.databases import create_database, drop_database, with_database
from strategy_worker.testing.memory_store import MemoryDatabase, MemoryStore
from strategy_worker.testing.simulation.invariants import InvariantViolation
from strategy_worker.testing.simulation.postgres_mirror import MirrorStore
from strategy_worker.testing.simulation.postgres_twin import PostgresTwin, install_clock
from strategy_worker.testing.simulation.scenario import LEASE_S, SimConfig, SimReport, Simulation
from strategy_worker.testing.virtual_time import run_in_virtual_time, waiting_for_real_io


@dataclass
class PostgresSimReport:
    """One seed of the PostgreSQL variant: the simulation's report and the twin's work."""

    sim: SimReport
    forwarded: dict[str, int] = field(default_factory=dict)
    """Calls made on PostgreSQL too, per Store method."""
    refused: dict[str, int] = field(default_factory=dict)
    """Of those, the ones the memory store answered with an error (see PostgresTwin)."""
    comparisons: int = 0
    """Whole-store comparisons (one after every step, and at the end)."""
    setup_seconds: float = 0.0
    """Creating and migrating the seed's database (wall time, not in `sim.wall_seconds`)."""


class PostgresVariant:
    """The simulation's hooks (`SimHooks`) for the PostgreSQL twin of one seed."""

    def __init__(self, server_dsn: str, *, seed: int) -> None:
        self.server_dsn = server_dsn
        self.database = f"sw_sim_{seed}_{uuid.uuid4().hex[:10]}"
        self.twin: PostgresTwin | None = None
        self.setup_seconds = 0.0
        self._created = False

    async def attach(self, db: MemoryDatabase) -> None:
        started = time.perf_counter()
        dsn = with_database(self.server_dsn, self.database)
        with waiting_for_real_io():
            await create_database(self.server_dsn, self.database)
            self._created = True
            await migrate(dsn)
            admin = await asyncpg.connect(dsn, timeout=10)
            try:
                await install_clock(admin, self.database)
            finally:
                await admin.close()
            admin = await asyncpg.connect(dsn, timeout=10)  # sees the new search_path
            for typename in ("jsonb", "json"):
                await admin.set_type_codec(
                    typename, encoder=jsoncodec.dumps, decoder=jsoncodec.loads, schema="pg_catalog"
                )
            config = DatabaseConfig(url=dsn, pool_min_size=1, pool_max_size=2)
            postgres = await PostgresStore.connect(config, lease_seconds=LEASE_S)
        self.twin = PostgresTwin(memory=db, postgres=postgres, admin=admin)
        self.setup_seconds = time.perf_counter() - started

    def wrap(self, store: MemoryStore) -> Store:
        assert self.twin is not None, "attach() first"
        return MirrorStore(store, self.twin)

    async def settle(self) -> None:
        assert self.twin is not None
        await self.twin.settle()

    async def check(self, *, full: bool = False) -> list[str]:
        assert self.twin is not None
        return await self.twin.check(full=full)

    async def close(self, *, keep: bool = False) -> None:
        """Close the connections; drop the database unless `keep`."""
        with waiting_for_real_io():
            if self.twin is not None:
                await self.twin.drain()
                await self.twin.postgres.close()
                await self.twin.admin.close()
            if self._created and not keep:
                await drop_database(self.server_dsn, self.database)


def run_simulation_postgres(
    config: SimConfig, server_dsn: str, *, keep_failed: bool = True
) -> PostgresSimReport:
    """Run one seed against a fresh database on `server_dsn`'s server (see the module
    docstring); InvariantViolation as the memory variant raises it, or when the two stores
    differ (naming the database, which is kept unless not `keep_failed`)."""

    async def main() -> PostgresSimReport:
        variant = PostgresVariant(server_dsn, seed=config.seed)
        try:
            report = await Simulation(config, hooks=variant).run()
        except InvariantViolation as exc:
            await variant.close(keep=keep_failed)
            kept = f"\n(postgres database {variant.database} kept to look at)"
            raise InvariantViolation(f"{exc}{kept if keep_failed else ''}") from None
        except BaseException:
            await variant.close()
            raise
        await variant.close()
        twin = variant.twin
        assert twin is not None
        return PostgresSimReport(
            sim=report,
            forwarded=dict(sorted(twin.forwarded.items())),
            refused=dict(sorted(twin.refused.items())),
            comparisons=twin.comparisons,
            setup_seconds=variant.setup_seconds,
        )

    return run_in_virtual_time(main, real_io=True)
