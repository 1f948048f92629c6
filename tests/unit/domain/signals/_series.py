"""Price series shared by the signal tests: a seeded random walk and the shipped MSFT days."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from strategy_worker.adapters.bar_files import BarFile
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.timeframes import Timeframe, timeframe

DAILY = timeframe("1d")
DATA = Path(__file__).resolve().parents[3] / "data"
T0 = datetime(2020, 1, 1, tzinfo=UTC)


def random_bars(
    n: int, *, seed: int = 7, symbol: str = "AAPL", tf: Timeframe = DAILY, start: datetime = T0
) -> list[Bar]:
    """A reproducible random walk of `n` consistent OHLC bars, 4-decimal prices."""
    rng = random.Random(seed)
    price = 100.0
    bars = []
    for i in range(n):
        open_ = price
        price = max(1.0, price * (1 + rng.gauss(0, 0.02)))
        high = max(open_, price) * (1 + abs(rng.gauss(0, 0.01)))
        low = min(open_, price) * (1 - abs(rng.gauss(0, 0.01)))
        q = Decimal("0.0001")
        o, h, lo, c = (Decimal(repr(x)).quantize(q) for x in (open_, high, low, price))
        bars.append(
            Bar(
                symbol=symbol,
                timeframe=tf,
                start=start + i * timedelta(seconds=tf.seconds),
                open=o,
                high=max(h, o, c),
                low=min(lo, o, c),
                close=c,
                volume=Decimal(rng.randint(1000, 100000)),
            )
        )
    return bars


def msft_bars() -> list[Bar]:
    """The 2,485 real daily MSFT bars of tests/data/msft_daily.csv."""
    return list(BarFile(DATA / "msft_daily.csv"))
