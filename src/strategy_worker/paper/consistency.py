"""Every stored figure of an execution, checked against a replay of its recorded fills.

The fills (`execution_fills`) are the record; everything else the store holds about money is
derived from them and must equal what a fresh `Portfolio` computes when it replays them in
order (README, "Positions and P&L"):

- the execution row: cash, fees, realized P&L, trade counts (total, winning, losing), and
  unrealized and total P&L at the marks they were valued at;
- the stored portfolio (`positions` JSONB, what a restart resumes from): its cash, P&L, fees
  and trade counts, and per symbol the quantity, cost basis, average cost, realized P&L,
  fees, last fill price and the open round trip's net P&L; no symbol more or less;
- every order: its filled quantity, fees and average fill price are those of its fills,
  and it is FILLED exactly when its fills add up to its quantity.

Unrealized P&L needs the marks the worker valued the positions at: passed by the caller, or
stored under ``positions["marks"]`` (symbol -> price). Without a mark for an open position
the figure cannot be checked, and that is reported as a mismatch too: a check that cannot
run is not a check that passed. Pure and synchronous: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from strategy_worker.domain.money import ZERO, quantize_price, to_decimal
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.domain.positions import Portfolio
from strategy_worker.errors import DomainError
from strategy_worker.store import ExecutionRecord, FillRecord, OrderRecord

#: Keys of each stored position, as `Portfolio.to_json` writes them.
_POSITION_FIELDS = (
    "quantity",
    "cost_basis",
    "avg_cost",
    "realized_pnl",
    "fees",
    "last_price",
    "trip_net_pnl",
)
_PORTFOLIO_FIELDS = ("initial_capital", "cash", "realized_pnl", "fees")
_TRADE_FIELDS = ("total", "winning", "losing")


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One stored figure that differs from the replay (or that could not be checked)."""

    figure: str
    """Where it is stored: a column (`losing_trades`), a JSON path
    (`positions.AAPL.cost_basis`) or an order (`orders.<client order id>.fees`)."""
    stored: str
    replayed: str

    def __str__(self) -> str:
        return f"{self.figure}: stored {self.stored}, replay {self.replayed}"

    def to_json(self) -> dict[str, str]:
        return {"figure": self.figure, "stored": self.stored, "replayed": self.replayed}


def stored_marks(record: ExecutionRecord) -> dict[str, Decimal]:
    """The marks stored with the execution's state (``positions["marks"]``), if any."""
    raw = record.state.positions.get("marks")
    if not isinstance(raw, Mapping):
        return {}
    marks: dict[str, Decimal] = {}
    for symbol, value in raw.items():
        try:
            marks[str(symbol)] = to_decimal(value)
        except (TypeError, ValueError):
            continue
    return marks


def replay_fills(record: ExecutionRecord, fills: Sequence[FillRecord]) -> Portfolio:
    """The portfolio the recorded fills give, in the order they were recorded.

    Raises DomainError when a fill cannot apply (a sell above the held quantity).
    """
    replay = Portfolio(record.initial_capital)
    for fill in fills:
        replay.apply_fill(fill.fill)
    return replay


def check_execution(
    record: ExecutionRecord,
    orders: Sequence[OrderRecord],
    fills: Sequence[FillRecord],
    *,
    marks: Mapping[str, Decimal] | None = None,
) -> tuple[Portfolio | None, list[Mismatch]]:
    """The replay (None when the fills do not replay) and every stored figure that differs."""
    try:
        replay = replay_fills(record, fills)
    except DomainError as exc:
        return None, [Mismatch("fills", f"{len(fills)} fills", f"do not replay: {exc}")]
    found: list[Mismatch] = []
    prices = {**stored_marks(record), **(marks or {})}
    _check_columns(record, replay, prices, found)
    _check_portfolio_json(record.state.positions, replay, found)
    _check_orders(orders, fills, found)
    return replay, found


def _same(stored: object, replayed: object) -> bool:
    if isinstance(replayed, Decimal):
        try:
            return to_decimal(stored) == replayed
        except (TypeError, ValueError, InvalidOperation):
            return False
    return stored == replayed


def _compare(found: list[Mismatch], figure: str, stored: object, replayed: object) -> None:
    if not _same(stored, replayed):
        found.append(Mismatch(figure, str(stored), str(replayed)))


def _check_columns(
    record: ExecutionRecord,
    replay: Portfolio,
    marks: Mapping[str, Decimal],
    found: list[Mismatch],
) -> None:
    state = record.state
    _compare(found, "cash", state.cash, replay.cash)
    _compare(found, "fees", state.fees, replay.fees)
    _compare(found, "realized_pnl", state.realized_pnl, replay.realized_pnl)
    _compare(found, "total_trades", state.total_trades, replay.total_trades)
    _compare(found, "winning_trades", state.winning_trades, replay.winning_trades)
    _compare(found, "losing_trades", state.losing_trades, replay.losing_trades)
    unpriced = sorted(sym for sym in replay.positions if marks.get(sym, ZERO) <= 0)
    if unpriced:
        found.append(
            Mismatch(
                "unrealized_pnl",
                str(state.unrealized_pnl),
                f"not checkable: no mark for {', '.join(unpriced)}",
            )
        )
        unrealized = state.unrealized_pnl  # total_pnl is still checked against its parts
    else:
        unrealized = replay.valuation(marks).unrealized_pnl
        _compare(found, "unrealized_pnl", state.unrealized_pnl, unrealized)
    _compare(found, "total_pnl", state.total_pnl, replay.realized_pnl + unrealized - replay.fees)


def _check_portfolio_json(
    stored: Mapping[str, Any], replay: Portfolio, found: list[Mismatch]
) -> None:
    """The stored portfolio, leaf by leaf, against the replay's `to_json()`."""
    expected = replay.to_json()
    for key in _PORTFOLIO_FIELDS:
        _compare(found, f"positions.{key}", stored.get(key), to_decimal(expected[key]))
    trades = stored.get("trades")
    trades = trades if isinstance(trades, Mapping) else {}
    for key in _TRADE_FIELDS:
        _compare(found, f"positions.trades.{key}", trades.get(key), expected["trades"][key])
    held = stored.get("positions")
    held = held if isinstance(held, Mapping) else {}
    wanted: Mapping[str, Mapping[str, str]] = expected["positions"]
    for symbol in sorted(set(held) | set(wanted)):
        if symbol not in wanted:
            found.append(Mismatch(f"positions.{symbol}", "held", "flat"))
            continue
        row = held.get(symbol)
        if not isinstance(row, Mapping):
            found.append(
                Mismatch(f"positions.{symbol}", "missing", f"{wanted[symbol]['quantity']} held")
            )
            continue
        for key in _POSITION_FIELDS:
            _compare(
                found, f"positions.{symbol}.{key}", row.get(key), to_decimal(wanted[symbol][key])
            )


def _check_orders(
    orders: Sequence[OrderRecord], fills: Sequence[FillRecord], found: list[Mismatch]
) -> None:
    quantity: dict[str, Decimal] = {}
    notional: dict[str, Decimal] = {}
    fees: dict[str, Decimal] = {}
    for record in fills:
        fill = record.fill
        key = fill.client_order_id
        quantity[key] = quantity.get(key, ZERO) + fill.quantity
        notional[key] = notional.get(key, ZERO) + fill.quantity * fill.price
        fees[key] = fees.get(key, ZERO) + fill.fee
    known = {order.client_order_id for order in orders}
    for orphan in sorted(set(quantity) - known):
        found.append(Mismatch(f"orders.{orphan}", "no such order", "has fills"))
    for order in orders:
        key = order.client_order_id
        filled = quantity.get(key, ZERO)
        where = f"orders.{key}"
        _compare(found, f"{where}.filled_quantity", order.filled_quantity, filled)
        _compare(found, f"{where}.fees", order.fees, fees.get(key, ZERO))
        average = quantize_price(notional[key] / filled) if filled else None
        if average is None:
            if order.filled_price is not None:
                found.append(Mismatch(f"{where}.filled_price", str(order.filled_price), "none"))
        else:
            _compare(found, f"{where}.filled_price", order.filled_price, average)
        complete = filled == order.quantity
        if complete != (order.status is OrderStatus.FILLED):
            found.append(
                Mismatch(
                    f"{where}.status",
                    order.status.value,
                    f"FILLED is {filled} of {order.quantity}: {'yes' if complete else 'no'}",
                )
            )
