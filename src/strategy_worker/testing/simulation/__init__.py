"""The deterministic simulation of the runtime (see `scenario.py`)."""

from strategy_worker.testing.simulation.invariants import InvariantViolation
from strategy_worker.testing.simulation.scenario import SimConfig, SimReport, run_simulation

__all__ = ["InvariantViolation", "SimConfig", "SimReport", "run_simulation"]
