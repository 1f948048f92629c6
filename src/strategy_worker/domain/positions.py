"""Positions, cash and P&L of one execution: weighted-average cost, exact to the cent.

Rules (README.md, "Trading rules", "Positions and P&L"):
- a position keeps its total cost (`cost_basis`), never a rounded average price;
- a buy adds quantity x price to the cost basis; fees are tracked apart, never in the basis;
- a sell of q out of Q releases cost_basis x q / Q rounded half-even to COST_QUANTUM
  (0.0001), or rounded down when that would release the whole basis (sub-tick costs), so
  what stays is never negative and never zero while shares are held; a full close releases
  all that is left; realized P&L = proceeds - released cost;
- long-only: a sell above the held quantity raises `DomainError` and changes nothing — the
  order state machine and the risk manager make sure such a fill is never fed;
- a *trade* is a round trip: a position opened from flat and closed back to flat; it wins
  when its realized P&L net of all its fees (buys and sells) is > 0, loses when < 0.
Invariant, exact: cash + market value == initial capital + realized + unrealized - fees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Any

from strategy_worker.domain.money import (
    COST_QUANTUM,
    MONEY_CONTEXT,
    ZERO,
    money_str,
    quantize_level,
    to_decimal,
)
from strategy_worker.domain.orders import Fill, Side
from strategy_worker.errors import DomainError


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """One symbol's holding; `cost_basis` is the exact total cost of what is held."""

    symbol: str
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    #: Last fill price: the mark of last resort when no price is known.
    last_price: Decimal = ZERO
    #: Realized P&L minus fees of the round trip in progress.
    trip_net_pnl: Decimal = ZERO

    @property
    def avg_cost(self) -> Decimal:
        """Average cost per share, `quantize_level` half-even (0 when flat)."""
        return quantize_level(self.cost_basis / self.quantity) if self.quantity else ZERO

    @property
    def is_flat(self) -> bool:
        return not self.quantity


def released_cost(position: Position, quantity: Decimal) -> Decimal:
    """The cost a sell of `quantity` (<= held) takes out of the position's cost basis.

    All of it for a full close; else cost_basis x quantity / held, half-even to COST_QUANTUM,
    rounded down instead when half-even would reach the whole basis (only at sub-tick
    costs): the rest of the basis stays > 0 for the shares still held, at any price.
    """
    if quantity == position.quantity:
        return position.cost_basis
    share = position.cost_basis * quantity / position.quantity
    released = share.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)
    if released >= position.cost_basis:
        released = share.quantize(COST_QUANTUM, rounding=ROUND_DOWN, context=MONEY_CONTEXT)
    return released


@dataclass(frozen=True, slots=True, kw_only=True)
class FillApplied:
    """What one fill did to the portfolio."""

    fill: Fill
    position: Position
    realized_pnl: Decimal
    released_cost: Decimal
    #: Net P&L of the round trip this fill closed, or None when it closed none.
    closed_trade_pnl: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionValuation:
    symbol: str
    quantity: Decimal
    mark: Decimal
    market_value: Decimal
    cost_basis: Decimal
    avg_cost: Decimal
    unrealized_pnl: Decimal
    #: market value / equity (0 when equity <= 0).
    weight: Decimal
    #: True when no price was given and the last fill price was used.
    stale: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Valuation:
    """The portfolio at a set of marks. `total_pnl` = realized + unrealized - fees."""

    cash: Decimal
    market_value: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    total_pnl: Decimal
    positions: Mapping[str, PositionValuation]

    @property
    def weights(self) -> dict[str, Decimal]:
        return {sym: pos.weight for sym, pos in self.positions.items()}

    @property
    def stale_symbols(self) -> tuple[str, ...]:
        return tuple(sym for sym, pos in self.positions.items() if pos.stale)


class Portfolio:
    """Cash, positions, P&L and trade statistics of one execution."""

    __slots__ = (
        "_positions",
        "cash",
        "fees",
        "initial_capital",
        "losing_trades",
        "realized_pnl",
        "total_trades",
        "winning_trades",
    )

    def __init__(self, initial_capital: Decimal) -> None:
        if not initial_capital > 0:
            raise DomainError("initial capital must be positive")
        self.initial_capital = initial_capital
        self.cash = initial_capital
        self.realized_pnl = ZERO
        self.fees = ZERO
        self.total_trades = 0
        self.winning_trades = 0
        self.losing_trades = 0
        self._positions: dict[str, Position] = {}

    @property
    def positions(self) -> Mapping[str, Position]:
        """Open (non-flat) positions by symbol, read-only."""
        return MappingProxyType(self._positions)

    def clone(self) -> Portfolio:
        """An independent copy (positions are immutable values, so the copy is shallow)."""
        twin = Portfolio.__new__(Portfolio)
        twin.initial_capital = self.initial_capital
        twin.cash = self.cash
        twin.realized_pnl = self.realized_pnl
        twin.fees = self.fees
        twin.total_trades = self.total_trades
        twin.winning_trades = self.winning_trades
        twin.losing_trades = self.losing_trades
        twin._positions = dict(self._positions)
        return twin

    def quantity(self, symbol: str) -> Decimal:
        pos = self._positions.get(symbol)
        return pos.quantity if pos else ZERO

    def apply_fill(self, fill: Fill) -> FillApplied:
        """Book one fill; raises DomainError (and changes nothing) on an oversell or bad fill."""
        if fill.quantity <= 0 or fill.price <= 0 or fill.fee < 0:
            raise DomainError(f"fill {fill.fill_id}: quantity/price must be > 0 and fee >= 0")
        pos = self._positions.get(fill.symbol) or Position(symbol=fill.symbol)
        notional = fill.quantity * fill.price
        if fill.side is Side.BUY:
            new = replace(
                pos,
                quantity=pos.quantity + fill.quantity,
                cost_basis=pos.cost_basis + notional,
                fees=pos.fees + fill.fee,
                last_price=fill.price,
                trip_net_pnl=pos.trip_net_pnl - fill.fee,
            )
            self.cash -= notional + fill.fee
            self.fees += fill.fee
            self._positions[fill.symbol] = new
            return FillApplied(fill=fill, position=new, realized_pnl=ZERO, released_cost=ZERO)
        if fill.quantity > pos.quantity:
            raise DomainError(
                f"fill {fill.fill_id}: selling {fill.quantity} {fill.symbol} "
                f"but only {pos.quantity} held (long-only)"
            )
        released = released_cost(pos, fill.quantity)
        realized = notional - released
        trip = pos.trip_net_pnl + realized - fill.fee
        new = replace(
            pos,
            quantity=pos.quantity - fill.quantity,
            cost_basis=pos.cost_basis - released,
            realized_pnl=pos.realized_pnl + realized,
            fees=pos.fees + fill.fee,
            last_price=fill.price,
            trip_net_pnl=trip,
        )
        self.cash += notional - fill.fee
        self.fees += fill.fee
        self.realized_pnl += realized
        closed: Decimal | None = None
        if new.is_flat:
            closed = trip
            self._record_trade(trip)
            del self._positions[fill.symbol]
        else:
            self._positions[fill.symbol] = new
        return FillApplied(
            fill=fill,
            position=new,
            realized_pnl=realized,
            released_cost=released,
            closed_trade_pnl=closed,
        )

    def _record_trade(self, net: Decimal) -> None:
        self.total_trades += 1
        if net > 0:
            self.winning_trades += 1
        elif net < 0:
            self.losing_trades += 1

    def valuation(self, prices: Mapping[str, Decimal]) -> Valuation:
        """Value every position at `prices` (the last fill price where a price is missing)."""
        rows: list[tuple[Position, Decimal, bool]] = []
        market_value = ZERO
        for sym in sorted(self._positions):
            pos = self._positions[sym]
            mark = prices.get(sym)
            stale = mark is None or mark <= 0
            if mark is None or mark <= 0:
                mark = pos.last_price
            rows.append((pos, mark, stale))
            market_value += pos.quantity * mark
        equity = self.cash + market_value
        unrealized_total = ZERO
        valued: dict[str, PositionValuation] = {}
        for pos, mark, stale in rows:
            value = pos.quantity * mark
            unrealized = value - pos.cost_basis
            unrealized_total += unrealized
            valued[pos.symbol] = PositionValuation(
                symbol=pos.symbol,
                quantity=pos.quantity,
                mark=mark,
                market_value=value,
                cost_basis=pos.cost_basis,
                avg_cost=pos.avg_cost,
                unrealized_pnl=unrealized,
                weight=value / equity if equity > 0 else ZERO,
                stale=stale,
            )
        return Valuation(
            cash=self.cash,
            market_value=market_value,
            equity=equity,
            realized_pnl=self.realized_pnl,
            unrealized_pnl=unrealized_total,
            fees=self.fees,
            total_pnl=self.realized_pnl + unrealized_total - self.fees,
            positions=MappingProxyType(valued),
        )

    # ------------------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        """JSON-safe state (Decimals as strings) for the `positions` JSONB column and resume."""
        return {
            "initial_capital": money_str(self.initial_capital),
            "cash": money_str(self.cash),
            "realized_pnl": money_str(self.realized_pnl),
            "fees": money_str(self.fees),
            "trades": {
                "total": self.total_trades,
                "winning": self.winning_trades,
                "losing": self.losing_trades,
            },
            "positions": {
                sym: {
                    "quantity": money_str(pos.quantity),
                    "cost_basis": money_str(pos.cost_basis),
                    "avg_cost": money_str(pos.avg_cost),
                    "realized_pnl": money_str(pos.realized_pnl),
                    "fees": money_str(pos.fees),
                    "last_price": money_str(pos.last_price),
                    "trip_net_pnl": money_str(pos.trip_net_pnl),
                }
                for sym, pos in sorted(self._positions.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Portfolio:
        """Rebuild a portfolio from `to_json()` output (resume after a restart)."""
        try:
            book = cls(to_decimal(data["initial_capital"]))
            book.cash = to_decimal(data["cash"])
            book.realized_pnl = to_decimal(data["realized_pnl"])
            book.fees = to_decimal(data["fees"])
            trades = data["trades"]
            book.total_trades = int(trades["total"])
            book.winning_trades = int(trades["winning"])
            book.losing_trades = int(trades["losing"])
            for sym, row in data["positions"].items():
                book._positions[sym] = Position(
                    symbol=sym,
                    quantity=to_decimal(row["quantity"]),
                    cost_basis=to_decimal(row["cost_basis"]),
                    realized_pnl=to_decimal(row["realized_pnl"]),
                    fees=to_decimal(row["fees"]),
                    last_price=to_decimal(row["last_price"]),
                    trip_net_pnl=to_decimal(row["trip_net_pnl"]),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DomainError(f"portfolio state is not valid: {exc}") from exc
        return book
