"""Price series shared by the signal tests: seeded random walks and the shipped MSFT days."""

from __future__ import annotations

from pathlib import Path

from strategy_worker.adapters.bar_files import BarFile
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.synthetic import random_bars

__all__ = ["DATA", "msft_bars", "random_bars"]

DATA = Path(__file__).resolve().parents[3] / "data"


def msft_bars() -> list[Bar]:
    """The 2,485 real daily MSFT bars of tests/data/msft_daily.csv."""
    return list(BarFile(DATA / "msft_daily.csv"))
