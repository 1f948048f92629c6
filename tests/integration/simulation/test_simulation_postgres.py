"""The simulation's slower variant: the same seeded scenarios with every store call made on
the real PostgreSQL store too (`testing/simulation/postgres_variant.py`), every invariant
checked after every step and the two stores compared after every step.

Each seed runs on a fresh, migrated database of its own on the test server, dropped after.
`SW_SIM_PG_SEEDS` / `SW_SIM_PG_STEPS` change the amount (about 25-50 steps a second on two
shared cores); a failing seed prints the command that runs it again (not an exact replay
on a real server, unlike the memory variant's)."""

from __future__ import annotations

import os
import re
import time

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.log import configure_logging
from strategy_worker.testing.simulation import InvariantViolation, SimConfig
from strategy_worker.testing.simulation.__main__ import replay_command
from strategy_worker.testing.simulation.postgres_variant import run_simulation_postgres

SEEDS = int(os.environ.get("SW_SIM_PG_SEEDS", "4"))
STEPS = int(os.environ.get("SW_SIM_PG_STEPS", "400"))
FIRST_SEED = int(os.environ.get("SW_SIM_PG_FIRST_SEED", "1"))


@pytest.mark.timeout(900)
def test_every_invariant_holds_and_both_stores_agree_after_every_step(database_url: str) -> None:
    configure_logging("CRITICAL", json_output=False)
    started = time.perf_counter()
    steps = comparisons = 0
    mirrored: dict[str, int] = {}
    for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
        config = SimConfig(seed=seed, steps=STEPS, workers=2 + seed % 2)
        try:
            result = run_simulation_postgres(config, database_url, keep_failed=False)
        except InvariantViolation as exc:
            pytest.fail(f"{exc}\nrun again: {replay_command(config, postgres=True)}")
        steps += result.sim.steps
        comparisons += result.comparisons
        for name, n in result.forwarded.items():
            mirrored[name] = mirrored.get(name, 0) + n
    took = time.perf_counter() - started
    print(
        f"simulation on postgres: {SEEDS} seeds, {steps} steps in {took:.1f} s "
        f"({steps / took:.0f} steps/s), {comparisons} store comparisons, "
        f"{sum(mirrored.values())} calls mirrored"
    )
    assert steps == SEEDS * STEPS
    assert comparisons >= steps  # one after every step, and the final ones
    # The scenarios reached the store the way the runtime uses it (not a vacuous pass).
    for name in ("commit", "record_marks", "acquire_executions", "renew_leases"):
        assert mirrored.get(name, 0) > 0, f"no {name} reached PostgreSQL"


@pytest.mark.timeout(300)
def test_a_postgresql_store_that_differs_from_the_memory_store_is_caught(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: quiet marks that PostgreSQL reports written but drops
    configure_logging("CRITICAL", json_output=False)

    async def drop_marks(self: PostgresStore, writes: object) -> set[object]:
        return set()

    monkeypatch.setattr(PostgresStore, "record_marks", drop_marks)

    # Act / Assert
    with pytest.raises(InvariantViolation, match="the stores differ: ") as caught:
        run_simulation_postgres(SimConfig(seed=1, steps=300), database_url, keep_failed=False)
    # A quiet mark writes the valuation and the ratcheted protection state: either shows.
    assert re.search(
        r"(execution \S+ state\.unrealized_pnl|protection \S+\.revision): memory ",
        str(caught.value),
    )
