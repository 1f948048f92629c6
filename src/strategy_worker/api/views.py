"""JSON views of an execution built from its row: positions at marks, limits in force, the
price chart. Pure functions of the rows and marks they are given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from strategy_worker.api.reads import plain, row_dict
from strategy_worker.domain.money import quantize_price
from strategy_worker.domain.orders import Fill, Side
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import StrategyRiskParams

ZERO = Decimal(0)


def _dec(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def strategy_risk_params(config: Mapping[str, Any]) -> StrategyRiskParams:
    raw = config.get("risk_params") or {}
    return StrategyRiskParams(
        max_position_size=_dec(raw.get("max_position_size")),
        stop_loss_pct=_dec(raw.get("stop_loss_pct")),
        max_daily_loss=_dec(raw.get("max_daily_loss")),
    )


def limits_in_force(worker: RiskLimits, config: Mapping[str, Any]) -> dict[str, object]:
    """The worker's limits (as this API's config states them) tightened by the strategy's."""
    limits = worker.tightened_by(strategy_risk_params(config))
    return {
        "max_position_size": limits.max_position_size,
        "max_daily_loss": limits.max_daily_loss,
        "max_daily_loss_amount": limits.max_daily_loss_amount,
        "stop_loss_pct": limits.stop_loss_pct,
        "stop_loss_buffer": limits.stop_loss_buffer,
        "min_order_value": limits.min_order_value,
        "max_order_value": limits.max_order_value,
        "max_total_exposure": limits.max_total_exposure,
    }


def held_positions(state: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    positions = state.get("positions") if isinstance(state, Mapping) else None
    return dict(positions) if isinstance(positions, Mapping) else {}


def positions_at_marks(
    state: Mapping[str, Any], marks: Mapping[str, Decimal], stop_pct: Decimal | None
) -> tuple[list[dict[str, object]], Decimal]:
    """Each open position valued at its mark (the price source's, else its last fill), and
    the total unrealized P&L."""
    out: list[dict[str, object]] = []
    total = ZERO
    for symbol, pos in sorted(held_positions(state).items()):
        quantity = _dec(pos.get("quantity")) or ZERO
        cost = _dec(pos.get("cost_basis")) or ZERO
        last = _dec(pos.get("last_price")) or ZERO
        mark = marks.get(symbol)
        source = "price_source" if mark is not None else "last_fill"
        mark = mark if mark is not None else last
        unrealized = quantity * mark - cost
        total += unrealized
        avg = _dec(pos.get("avg_cost")) or ZERO
        out.append(
            {
                "symbol": symbol,
                "quantity": quantity,
                "avg_cost": avg,
                "cost_basis": cost,
                "mark": mark,
                "mark_source": source,
                "market_value": quantity * mark,
                "unrealized_pnl": unrealized,
                "realized_pnl": _dec(pos.get("realized_pnl")) or ZERO,
                "fees": _dec(pos.get("fees")) or ZERO,
                "stop_level": quantize_price(avg * (1 - stop_pct)) if stop_pct and avg else None,
            }
        )
    return out, total


def execution_detail(
    row: asyncpg.Record, marks: Mapping[str, Decimal], worker_limits: RiskLimits
) -> dict[str, Any]:
    config = row["config"] if isinstance(row["config"], Mapping) else {}
    state = row["positions"] if isinstance(row["positions"], Mapping) else {}
    limits = limits_in_force(worker_limits, config)
    stop_pct = limits["stop_loss_pct"]
    positions, unrealized = positions_at_marks(
        state, marks, stop_pct if isinstance(stop_pct, Decimal) else None
    )
    risk = state.get("risk") if isinstance(state.get("risk"), Mapping) else {}
    detail = row_dict(row, skip=("positions", "config"))
    realized, fees = row["realized_pnl"], row["fees"]
    market_value = sum((Decimal(str(p["market_value"])) for p in positions), ZERO)
    detail.update(
        config=plain(config),
        positions=positions,
        limits=limits,
        risk_state=plain(risk),
        at_marks={
            "unrealized_pnl": unrealized,
            "total_pnl": realized + unrealized - fees,
            "equity": row["cash"] + market_value,
        },
        trade_stats={
            "total": row["total_trades"],
            "winning": row["winning_trades"],
            "losing": row["losing_trades"],
            "win_rate": (
                (Decimal(row["winning_trades"]) / Decimal(row["total_trades"])).quantize(
                    Decimal("0.0001")
                )
                if row["total_trades"]
                else None
            ),
        },
    )
    return detail


def fills_of(rows: Sequence[asyncpg.Record]) -> list[Fill]:
    return [
        Fill(
            fill_id=r["fill_id"],
            client_order_id=r["client_order_id"],
            symbol=r["symbol"],
            side=Side(r["side"]),
            quantity=r["quantity"],
            price=r["price"],
            fee=r["fee"],
            filled_at=r["filled_at"],
        )
        for r in rows
    ]


def price_chart(
    symbol: str,
    orders: Sequence[asyncpg.Record],
    fills: Sequence[asyncpg.Record],
    mark: Decimal | None,
    now: datetime,
    stop_level: Decimal | None,
) -> dict[str, object]:
    """The prices this execution saw for `symbol` (each order's reference mark when it was
    planned, each fill, the current mark) and its markers: entries (buys), exits (sells)
    and stops (STOP_LOSS sells); plus the current stop level."""
    points: list[tuple[datetime, Decimal]] = [
        (o["created_at"], o["price"]) for o in orders if o["symbol"] == symbol
    ]
    markers: list[dict[str, object]] = []
    for fill in fills:
        if fill["symbol"] != symbol:
            continue
        points.append((fill["filled_at"], fill["price"]))
        kind = "entry" if fill["side"] == "BUY" else "exit"
        if fill["purpose"] == "STOP_LOSS":
            kind = "stop"
        markers.append(
            {
                "t": plain(fill["filled_at"]),
                "kind": kind,
                "price": fill["price"],
                "quantity": fill["quantity"],
            }
        )
    if mark is not None:
        points.append((now, mark))
    points.sort(key=lambda p: p[0])
    return {
        "symbol": symbol,
        "prices": [{"t": plain(t), "price": p} for t, p in points],
        "markers": markers,
        "stop_level": stop_level,
    }
