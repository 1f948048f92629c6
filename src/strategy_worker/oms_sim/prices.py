"""Simulated price sources for paper trading and tests (implement ports.PriceSource).

- RandomWalkPrices: a seeded, reproducible random walk, advanced explicitly (`step()`) or by
  a clock (so an accelerated paper clock moves prices faster);
- ReplayPrices: a recorded series (CSV or JSON lines of timestamp, symbol, price);
- ManualPrices: prices a test sets by hand.
"""

from __future__ import annotations

import bisect
import csv
import json
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from strategy_worker.domain.money import PRICE_QUANTUM, quantize_price, to_decimal
from strategy_worker.errors import ConfigError

_SHOCK_QUANTUM = Decimal("0.00000001")
# Bounds of the seeded start price given to a symbol nobody configured, in cents.
_START_MIN_CENTS, _START_MAX_CENTS = 1_000, 50_000
# A time-based advance never runs more steps than this in one call (keeps a call bounded).
_MAX_STEPS_PER_ADVANCE = 100_000


class Clock(Protocol):
    def now(self) -> datetime: ...


class RandomWalkPrices:
    """Reproducible Decimal random walk: same seed and same calls give the same prices.

    Each symbol draws from its own generator seeded by (seed, symbol), so adding a symbol
    never changes another symbol's path. With a `clock`, `get_prices` first advances one
    step per `step_s` simulated seconds elapsed; without one, only `step()` moves prices.
    """

    def __init__(
        self,
        *,
        seed: int,
        start_prices: Mapping[str, Decimal] | None = None,
        volatility: Decimal = Decimal("0.001"),
        clock: Clock | None = None,
        step_s: float = 1.0,
        strict: bool = False,
    ) -> None:
        if volatility < 0:
            raise ConfigError("volatility must not be negative")
        if step_s <= 0:
            raise ConfigError("step_s must be positive")
        self._seed = seed
        self._volatility = volatility
        self._clock = clock
        self._step_s = step_s
        self._strict = strict
        self._prices: dict[str, Decimal] = {}
        self._rngs: dict[str, random.Random] = {}
        self._steps = 0
        self._origin = clock.now() if clock is not None else None
        for symbol, price in (start_prices or {}).items():
            if price <= 0:
                raise ConfigError(f"start price of {symbol} must be positive")
            self._add(symbol, quantize_price(price))

    @property
    def steps(self) -> int:
        return self._steps

    def start_price_for(self, symbol: str) -> Decimal:
        """The seeded start price an unconfigured symbol gets: 10.00 to 500.00."""
        rng = random.Random(f"{self._seed}:{symbol}:start")
        return quantize_price(Decimal(rng.randint(_START_MIN_CENTS, _START_MAX_CENTS)) / 100)

    def step(self, count: int = 1) -> None:
        """Advance every known symbol by `count` steps."""
        for _ in range(count):
            for symbol in self._prices:
                self._prices[symbol] = self._next(symbol)
            self._steps += 1

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        self._advance_to_clock()
        result: dict[str, Decimal] = {}
        for symbol in symbols:
            if symbol not in self._prices:
                if self._strict:
                    continue
                self._add(symbol, self.start_price_for(symbol))
            result[symbol] = self._prices[symbol]
        return result

    async def close(self) -> None:
        return None

    def _add(self, symbol: str, price: Decimal) -> None:
        self._prices[symbol] = price
        self._rngs[symbol] = random.Random(f"{self._seed}:{symbol}:walk")

    def _next(self, symbol: str) -> Decimal:
        # The shock is a ratio, drawn as a float and made an exact Decimal at once.
        shock = to_decimal(self._rngs[symbol].gauss(0.0, 1.0)).quantize(_SHOCK_QUANTUM)
        moved = quantize_price(self._prices[symbol] * (1 + self._volatility * shock))
        return max(moved, PRICE_QUANTUM)

    def _advance_to_clock(self) -> None:
        if self._clock is None or self._origin is None:
            return
        elapsed = (self._clock.now() - self._origin).total_seconds()
        due = int(elapsed // self._step_s) - self._steps
        if due > 0:
            self.step(min(due, _MAX_STEPS_PER_ADVANCE))
            # Far behind (a huge clock jump): skip ahead rather than loop for minutes.
            self._steps = max(self._steps, int(elapsed // self._step_s))


class ReplayPrices:
    """Prices replayed from a file of (timestamp, symbol, price) rows.

    With a `clock`, the price of a symbol is its last row at or before `clock.now()`;
    without one, a cursor starts at the first timestamp and `step()` moves it to the next.
    After the last row, the last prices stay (`exhausted` turns true).
    """

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        rows = _read_rows(path)
        if not rows:
            raise ConfigError(f"{path}: no price rows")
        rows.sort(key=lambda row: row[0])
        self._times = sorted({row[0] for row in rows})
        # Per symbol: its timestamps and prices in time order, searched by bisection.
        self._series: dict[str, tuple[list[datetime], list[Decimal]]] = {}
        for moment, symbol, price in rows:
            times, prices = self._series.setdefault(symbol, ([], []))
            times.append(moment)
            prices.append(price)
        self._clock = clock
        self._cursor = 0

    @property
    def first_time(self) -> datetime:
        """The file's first timestamp (when a replay of it starts)."""
        return self._times[0]

    @property
    def last_time(self) -> datetime:
        """The file's last timestamp."""
        return self._times[-1]

    @property
    def exhausted(self) -> bool:
        return self._current_time() >= self._times[-1]

    def step(self, count: int = 1) -> None:
        self._cursor = min(self._cursor + count, len(self._times) - 1)

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        now = self._current_time()
        result: dict[str, Decimal] = {}
        for symbol in symbols:
            series = self._series.get(symbol)
            if series is None:
                continue
            index = bisect.bisect_right(series[0], now)
            if index > 0:
                result[symbol] = series[1][index - 1]
        return result

    async def close(self) -> None:
        return None

    def _current_time(self) -> datetime:
        if self._clock is not None:
            return self._clock.now()
        return self._times[self._cursor]


class ManualPrices:
    """Prices set by hand (tests): `set_price`, `remove`."""

    def __init__(self, prices: Mapping[str, Decimal] | None = None) -> None:
        self._prices: dict[str, Decimal] = dict(prices or {})

    def set_price(self, symbol: str, price: Decimal) -> None:
        if price <= 0:
            raise ValueError("price must be positive")
        self._prices[symbol] = price

    def remove(self, symbol: str) -> None:
        self._prices.pop(symbol, None)

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        return {s: self._prices[s] for s in symbols if s in self._prices}

    async def close(self) -> None:
        return None


def _read_rows(path: Path) -> list[tuple[datetime, str, Decimal]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from exc
    if path.suffix in {".jsonl", ".ndjson", ".json"}:
        records: list[Mapping[str, object]] = [
            json.loads(line, parse_float=Decimal) for line in text.splitlines() if line.strip()
        ]
    else:
        records = list(csv.DictReader(text.splitlines()))
    rows = []
    for number, record in enumerate(records, start=1):
        try:
            moment = datetime.fromisoformat(str(record["timestamp"]))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            price = to_decimal(record["price"])
            symbol = str(record["symbol"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: row {number}: want timestamp,symbol,price: {exc}") from exc
        if price <= 0:
            raise ConfigError(f"{path}: row {number}: price must be positive")
        rows.append((moment, symbol, price))
    return rows
