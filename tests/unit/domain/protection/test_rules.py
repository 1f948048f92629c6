"""Trigger and level rules shared by the emulator and the paper OMS."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.orders import Side
from strategy_worker.domain.positions import Position
from strategy_worker.domain.protection import rules
from strategy_worker.domain.risk.stop_loss import stop_level
from strategy_worker.errors import DomainError

D = Decimal


def test_stop_loss_level_equals_the_fixed_stop_loss_monitors_level() -> None:
    position = Position(symbol="AAPL", quantity=D(3), cost_basis=D("301.01"))

    assert rules.stop_loss_level(D(3), D("301.01"), D("0.05")) == stop_level(position, D("0.05"))
    assert rules.stop_loss_level(D(3), D("301.01"), D("0.05")) == D("95.3198")


def test_take_profit_level_is_above_the_average_cost_rounded_half_even() -> None:
    # 100.00005 x 1.1 = 110.000055 -> 110.0001 (half-even at the 4th place)
    assert rules.take_profit_level(D(2), D("200.0001"), D("0.1")) == D("110.0001")
    assert rules.take_profit_level(D(1), D("100"), D("0.2")) == D("120.0000")


def test_trail_level_by_pct_and_by_amount_for_both_sides() -> None:
    assert rules.trail_level(D("123.45"), Side.SELL, pct=D("0.05")) == D("117.2775")
    assert rules.trail_level(D("123.45"), Side.SELL, amount=D("2.5")) == D("120.9500")
    assert rules.trail_level(D("123.45"), Side.BUY, pct=D("0.05")) == D("129.6225")
    assert rules.trail_level(D("123.45"), Side.BUY, amount=D("2.5")) == D("125.9500")


def test_trail_level_rounds_half_even_to_the_price_quantum() -> None:
    # 100.0001 x 0.95 = 95.000095 -> 95.0001 (…095 is not a tie: rounds up); 10.00010 x 0.5
    # = 5.00005 is a tie -> 5.0000 (even)
    assert rules.trail_level(D("100.0001"), Side.SELL, pct=D("0.05")) == D("95.0001")
    assert rules.trail_level(D("10.0001"), Side.SELL, pct=D("0.5")) == D("5.0000")


def test_a_trail_needs_exactly_one_offset() -> None:
    with pytest.raises(DomainError):
        rules.trail_level(D(100), Side.SELL)
    with pytest.raises(DomainError):
        rules.trail_level(D(100), Side.SELL, pct=D("0.1"), amount=D(1))


def test_sell_stop_triggers_at_or_below_and_gaps_only_strictly_below() -> None:
    assert rules.stop_reached(Side.SELL, D(95), D(95))
    assert rules.stop_reached(Side.SELL, D(95), D("94.99"))
    assert not rules.stop_reached(Side.SELL, D(95), D("95.01"))
    assert not rules.gapped(Side.SELL, D(95), D(95))
    assert rules.gapped(Side.SELL, D(95), D(80))
    assert rules.stop_reached(Side.BUY, D(105), D(105))
    assert rules.gapped(Side.BUY, D(105), D(110))


def test_limit_offset_moves_away_from_the_market() -> None:
    assert rules.offset_limit(D(95), Side.SELL, D("0.5")) == D("94.5000")
    assert rules.offset_limit(D(95), Side.BUY, D("0.5")) == D("95.5000")
    assert rules.offset_amount(D(95), D("0.01")) == D("0.9500")
    with pytest.raises(DomainError):
        rules.offset_limit(D(95), Side.SELL, D(-1))


prices = st.decimals(min_value=D("0.01"), max_value=D("10000"), places=4)


@settings(max_examples=300, deadline=None)
@given(
    path=st.lists(prices, min_size=1, max_size=60),
    pct=st.decimals(min_value=D("0.001"), max_value=D("0.5"), places=4),
    amount=st.decimals(min_value=D("0.01"), max_value=D("50"), places=2),
    side=st.sampled_from([Side.SELL, Side.BUY]),
)
def test_a_trailing_level_never_moves_against_the_position(
    path: list[Decimal], pct: Decimal, amount: Decimal, side: Side
) -> None:
    watermark: Decimal | None = None
    last_pct: Decimal | None = None
    last_amount: Decimal | None = None
    for mark in path:
        watermark = rules.ratchet(watermark, mark, side)
        by_pct = rules.trail_level(watermark, side, pct=pct)
        by_amount = rules.trail_level(watermark, side, amount=amount)
        if last_pct is not None and last_amount is not None:
            if side is Side.SELL:  # protects a long: the level only rises
                assert by_pct >= last_pct
                assert by_amount >= last_amount
            else:  # protects a short: the level only falls
                assert by_pct <= last_pct
                assert by_amount <= last_amount
        last_pct, last_amount = by_pct, by_amount
