"""Simulated price sources: reproducible random walk, replayed series, manual prices."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from strategy_worker.domain.money import quantize_price
from strategy_worker.errors import ConfigError
from strategy_worker.oms_sim.prices import ManualPrices, RandomWalkPrices, ReplayPrices

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


async def walk_path(seed: int, steps: int) -> list[Decimal]:
    prices = RandomWalkPrices(seed=seed, start_prices={"AAPL": Decimal("180")})
    path = []
    for _ in range(steps):
        prices.step()
        path.append((await prices.get_prices(["AAPL"]))["AAPL"])
    return path


async def test_random_walk_is_reproducible_for_a_seed_and_differs_across_seeds() -> None:
    first = await walk_path(1, 50)

    assert first == await walk_path(1, 50)
    assert first != await walk_path(2, 50)
    assert len(set(first)) > 1


async def test_random_walk_prices_are_positive_and_quantized() -> None:
    prices = RandomWalkPrices(
        seed=5, start_prices={"X": Decimal("0.05")}, volatility=Decimal("0.2")
    )
    for _ in range(200):
        prices.step()
        price = (await prices.get_prices(["X"]))["X"]
        assert price > 0
        assert price == quantize_price(price)


async def test_unknown_symbol_gets_a_start_price_derived_from_seed_and_symbol() -> None:
    a = RandomWalkPrices(seed=9)
    b = RandomWalkPrices(seed=9)

    got = await a.get_prices(["ZZZ"])

    assert got == await b.get_prices(["ZZZ"])
    assert Decimal(10) <= got["ZZZ"] <= Decimal(500)
    assert got["ZZZ"] == a.start_price_for("ZZZ")


async def test_adding_a_symbol_does_not_change_another_symbols_path() -> None:
    alone = RandomWalkPrices(seed=4, start_prices={"A": Decimal(100)})
    paired = RandomWalkPrices(seed=4, start_prices={"A": Decimal(100), "B": Decimal(50)})

    alone.step(10)
    paired.step(10)

    assert (await alone.get_prices(["A"])) == (await paired.get_prices(["A"]))


async def test_strict_random_walk_leaves_unknown_symbols_out() -> None:
    prices = RandomWalkPrices(seed=1, start_prices={"A": Decimal(1)}, strict=True)

    assert set(await prices.get_prices(["A", "B"])) == {"A"}


async def test_clocked_random_walk_advances_one_step_per_step_s_of_simulated_time() -> None:
    clock = FakeClock(T0)
    prices = RandomWalkPrices(seed=3, start_prices={"A": Decimal(100)}, clock=clock, step_s=2.0)
    assert (await prices.get_prices(["A"]))["A"] == Decimal(100)

    clock.moment = T0 + timedelta(seconds=7)
    await prices.get_prices(["A"])

    assert prices.steps == 3
    manual = RandomWalkPrices(seed=3, start_prices={"A": Decimal(100)})
    manual.step(3)
    assert await prices.get_prices(["A"]) == await manual.get_prices(["A"])


def test_random_walk_rejects_a_non_positive_start_price() -> None:
    with pytest.raises(ConfigError):
        RandomWalkPrices(seed=1, start_prices={"A": Decimal(0)})


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(
        "timestamp,symbol,price\n"
        "2026-01-05T14:30:00+00:00,AAPL,180.10\n"
        "2026-01-05T14:30:00+00:00,MSFT,400\n"
        "2026-01-05T14:31:00+00:00,AAPL,181.25\n",
        encoding="utf-8",
    )
    return path


async def test_replay_steps_through_timestamps_and_keeps_last_prices(csv_file: Path) -> None:
    prices = ReplayPrices(csv_file)
    assert await prices.get_prices(["AAPL", "MSFT", "NOPE"]) == {
        "AAPL": Decimal("180.10"),
        "MSFT": Decimal("400"),
    }

    prices.step()
    assert await prices.get_prices(["AAPL", "MSFT"]) == {
        "AAPL": Decimal("181.25"),
        "MSFT": Decimal("400"),
    }
    assert prices.exhausted
    prices.step()
    assert (await prices.get_prices(["AAPL"]))["AAPL"] == Decimal("181.25")


async def test_replay_with_a_clock_gives_the_last_price_at_or_before_now(csv_file: Path) -> None:
    clock = FakeClock(T0 - timedelta(seconds=1))
    prices = ReplayPrices(csv_file, clock=clock)
    assert await prices.get_prices(["AAPL"]) == {}

    clock.moment = T0 + timedelta(seconds=59)
    assert (await prices.get_prices(["AAPL"]))["AAPL"] == Decimal("180.10")


async def test_replay_reads_json_lines_without_float_rounding(tmp_path: Path) -> None:
    path = tmp_path / "prices.jsonl"
    rows = [{"timestamp": "2026-01-05T14:30:00Z", "symbol": "X", "price": 0.1}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")

    assert await ReplayPrices(path).get_prices(["X"]) == {"X": Decimal("0.1")}


def test_replay_rejects_a_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,symbol,price\nyesterday,X,1\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="row 1"):
        ReplayPrices(path)


async def test_manual_prices_return_only_what_was_set() -> None:
    prices = ManualPrices({"A": Decimal(1)})
    prices.set_price("B", Decimal("2.5"))
    prices.remove("A")

    assert await prices.get_prices(["A", "B"]) == {"B": Decimal("2.5")}
