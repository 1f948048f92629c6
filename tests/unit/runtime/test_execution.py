"""ExecutionRunner: what it remembers of the prices it is given."""

from __future__ import annotations

from decimal import Decimal

from .test_price_watch import Rig


async def test_valuate_with_every_symbol_of_the_worker_keeps_only_its_own_marks() -> None:
    # Arrange: the monitor hands every runner one map of all symbols it read.
    rig = Rig()
    runner = rig.runner({"AAPL": 10}, targets=("MSFT",))
    everything = {f"S{i:03d}": Decimal(i + 1) for i in range(500)}
    everything |= {"AAPL": Decimal("101.25"), "MSFT": Decimal("330.10")}

    # Act
    valuation = runner.valuate(everything)

    # Assert: two marks kept, not 502; the valuation uses the new AAPL mark.
    assert runner.last_prices == {"AAPL": Decimal("101.25"), "MSFT": Decimal("330.10")}
    assert valuation.equity == runner.portfolio.cash + Decimal("1012.50")


async def test_valuate_without_a_price_keeps_the_last_known_mark() -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": 10})

    runner.valuate({})

    assert runner.last_prices == {"AAPL": Decimal(100)}
