"""Positions and cash of one account or one execution at the paper venue, moved by fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import Fill, Side


@dataclass(slots=True)
class PositionBook:
    """Per-symbol quantities and notionals plus cash of one account or one execution."""

    cash: Decimal
    fees: Decimal = ZERO
    bought: dict[str, Decimal] = field(default_factory=dict)
    sold: dict[str, Decimal] = field(default_factory=dict)
    buy_notional: dict[str, Decimal] = field(default_factory=dict)
    sell_notional: dict[str, Decimal] = field(default_factory=dict)
    fees_by_symbol: dict[str, Decimal] = field(default_factory=dict)

    def apply(self, fill: Fill) -> None:
        sym = fill.symbol
        if fill.side is Side.BUY:
            self.bought[sym] = self.bought.get(sym, ZERO) + fill.quantity
            self.buy_notional[sym] = self.buy_notional.get(sym, ZERO) + fill.notional
            self.cash -= fill.notional
        else:
            self.sold[sym] = self.sold.get(sym, ZERO) + fill.quantity
            self.sell_notional[sym] = self.sell_notional.get(sym, ZERO) + fill.notional
            self.cash += fill.notional
        self.cash -= fill.fee
        self.fees += fill.fee
        self.fees_by_symbol[sym] = self.fees_by_symbol.get(sym, ZERO) + fill.fee

    @property
    def symbols(self) -> list[str]:
        return sorted(self.bought.keys() | self.sold.keys())

    def net(self, symbol: str) -> Decimal:
        return self.bought.get(symbol, ZERO) - self.sold.get(symbol, ZERO)

    def net_positions(self) -> dict[str, Decimal]:
        return {sym: self.net(sym) for sym in self.symbols}
