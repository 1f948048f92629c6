"""Seeded synthetic bars: a reproducible random walk for tests, benchmarks and demos.

The same (seed, symbol) always gives the same bars. The walk's shocks are drawn as floats
and every price is made an exact 4-decimal `Decimal` at once, so no float reaches a bar.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.timeframes import Timeframe, timeframe

_QUANTUM = Decimal("0.0001")
DEFAULT_START = datetime(2020, 1, 1, tzinfo=UTC)


def random_bars(
    n: int,
    *,
    seed: int = 7,
    symbol: str = "AAPL",
    tf: Timeframe | None = None,
    start: datetime = DEFAULT_START,
    price: float = 100.0,
    volatility: float = 0.02,
) -> list[Bar]:
    """`n` consecutive, consistent OHLCV bars of `symbol` (default daily from 2020-01-01)."""
    frame = tf or timeframe("1d")
    rng = random.Random(f"{seed}:{symbol}")
    first = frame.floor(start)
    bars: list[Bar] = []
    for i in range(n):
        open_ = price
        price = max(1.0, price * (1 + rng.gauss(0, volatility)))
        high = max(open_, price) * (1 + abs(rng.gauss(0, volatility / 2)))
        low = min(open_, price) * (1 - abs(rng.gauss(0, volatility / 2)))
        o, h, lo, c = (Decimal(repr(x)).quantize(_QUANTUM) for x in (open_, high, low, price))
        bars.append(
            Bar(
                symbol=symbol,
                timeframe=frame,
                start=first + i * timedelta(seconds=frame.seconds),
                open=o,
                high=max(h, o, c),
                low=min(lo, o, c),
                close=c,
                volume=Decimal(rng.randint(1_000, 100_000)),
            )
        )
    return bars
