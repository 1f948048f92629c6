"""Write examples/daily-bars.csv: three years of daily OHLCV bars for the spec's sample
symbols (AAPL, MSFT, GOOGL), for replaying strategies with daily rules in paper mode:

    scripts/paper.sh examples/tech-growth.json --prices examples/daily-bars.csv \\
        --speed max --duration 1100d

Synthetic and deterministic (seeded; regenerate byte for byte with
`.venv/bin/python scripts/make_example_bars.py`): weekdays from 2021-01-04 to 2023-12-29,
each symbol a random walk through calm rises, slides and a sharp fall, so the sample's
MOMENTUM rules (RSI(14) > 40 and MACD above its signal, after their ~235-bar warm-up)
enter, the 5% stop-loss fires, and re-entries wait for the rules again. Not market data.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

FIRST, LAST = date(2021, 1, 4), date(2023, 12, 29)
# symbol: (start price, [(trading days, daily drift, daily volatility), ...] repeated)
REGIMES = {
    "AAPL": ("132.05", [(180, 0.0010, 0.015), (60, -0.0040, 0.020), (120, 0.0020, 0.012)]),
    "MSFT": ("217.69", [(150, 0.0008, 0.013), (90, -0.0025, 0.018), (90, 0.0030, 0.014)]),
    "GOOGL": ("86.31", [(200, 0.0012, 0.016), (40, -0.0060, 0.025), (100, 0.0015, 0.015)]),
}
CENT = Decimal("0.01")


def _money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_EVEN)


def main() -> None:
    days = [FIRST + timedelta(n) for n in range((LAST - FIRST).days + 1)]
    weekdays = [d for d in days if d.weekday() < 5]
    rows = ["date,symbol,open,high,low,close,volume"]
    by_day: dict[date, list[str]] = {d: [] for d in weekdays}
    for index, (symbol, (start, regimes)) in enumerate(REGIMES.items()):
        rng = random.Random(f"20210104:{symbol}")
        price = float(start)
        schedule = [(drift, vol) for n, drift, vol in regimes for _ in range(n)]
        for i, day in enumerate(weekdays):
            drift, vol = schedule[(i + 37 * index) % len(schedule)]
            open_ = price
            price = max(1.0, price * (1 + drift + rng.gauss(0, vol)))
            high = max(open_, price) * (1 + abs(rng.gauss(0, vol / 3)))
            low = min(open_, price) * (1 - abs(rng.gauss(0, vol / 3)))
            o, h, lo, c = (_money(x) for x in (open_, high, low, price))
            h, lo = max(h, o, c), min(lo, o, c)
            volume = rng.randint(20_000_000, 90_000_000)
            by_day[day].append(f"{day.isoformat()},{symbol},{o},{h},{lo},{c},{volume}")
    for day in weekdays:
        rows += by_day[day]
    target = Path(__file__).resolve().parents[1] / "examples" / "daily-bars.csv"
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {target} ({len(rows) - 1} bars)")  # noqa: T201 - a script reports what it wrote


if __name__ == "__main__":
    main()
