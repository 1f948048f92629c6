"""The committed state of one execution, and how it is stored and restored.

An `ExecutionModel` is what the store holds about an execution the moment after a commit:
status, portfolio, risk state, orders, the next intent number, the state version, and the
runtime's own durable plans (a stop in progress, orders waiting for a rate token, a
rebalance waiting for its sells). A step works on `fork()` of it and the runner adopts the
fork only once the commit succeeded, so memory is never ahead of the store.

Persisted in `strategy_executions.positions` (JSONB): the portfolio (`Portfolio.to_json`),
`risk` (`ExecutionRisk.to_json`), `runtime` (`RuntimePlans.to_json`) and `marks` (the
prices the stored unrealized P&L was valued at). The protective orders' book
(`protection`, runtime/protection.py) is stored beside it, in `execution_protection`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import ZERO, money_str, to_decimal
from strategy_worker.domain.order_state import OrderState
from strategy_worker.domain.orders import (
    OrderIntent,
    OrderPurpose,
    OrderType,
    Side,
)
from strategy_worker.domain.positions import Portfolio, Valuation
from strategy_worker.domain.protection import ProtectionBook
from strategy_worker.domain.risk.state import ExecutionRisk
from strategy_worker.errors import DomainError
from strategy_worker.store import ExecutionState, ExecutionStatus, TradingState


@dataclass(frozen=True, slots=True, kw_only=True)
class StopPlan:
    """A stop in progress: the execution ends (`final`) only once it is flat at the OMS."""

    reason: str
    final: ExecutionStatus
    """STOPPED (asked for, or worker shutdown) or ERROR (an unexpected failure)."""
    requested_at: datetime
    request_id: uuid.UUID | None = None
    rounds: int = 0
    """Closing rounds sent so far (a rejected close is retried with backoff)."""
    next_round_at: float = 0.0
    """Epoch seconds before which no new closing round is sent."""
    alerted: bool = False
    """True once the CRITICAL `STOP_INCOMPLETE` risk event was raised."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "final": self.final.value,
            "requested_at": self.requested_at.isoformat(),
            "request_id": str(self.request_id) if self.request_id else None,
            "rounds": self.rounds,
            "next_round_at": self.next_round_at,
            "alerted": self.alerted,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StopPlan:
        request = data.get("request_id")
        return cls(
            reason=str(data["reason"]),
            final=ExecutionStatus(data["final"]),
            requested_at=datetime.fromisoformat(str(data["requested_at"])),
            request_id=uuid.UUID(str(request)) if request else None,
            rounds=int(data.get("rounds", 0)),
            next_round_at=float(data.get("next_round_at", 0.0)),
            alerted=bool(data.get("alerted", False)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimePlans:
    """What the runtime decided and must still do, kept durable with the state."""

    stop: StopPlan | None = None
    deferred: tuple[OrderIntent, ...] = ()
    """Approved orders that found no rate token: sent, re-checked, once a token is there.
    Unnumbered (intent_seq 0) until then, so client order ids stay consecutive."""
    rebalance_drift: Decimal | None = None
    """A rebalance whose sells are in flight: its buys are planned once they are done."""
    rebalance_from: int = 0
    """The first intent_seq of that rebalance's sells (the `rebalanced` event lists them)."""
    day_start_pending: bool = False
    """The trading day rolled while no fresh marks were known: the next valuation at
    fresh marks of every held symbol opens the day (never a valuation at fill prices)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stop": self.stop.to_json() if self.stop else None,
            "deferred": [_intent_json(i) for i in self.deferred],
            "rebalance_drift": money_str(self.rebalance_drift)
            if self.rebalance_drift is not None
            else None,
            "day_start_pending": self.day_start_pending,
            "rebalance_from": self.rebalance_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RuntimePlans:
        if not data:
            return cls()
        try:
            stop = data.get("stop")
            drift = data.get("rebalance_drift")
            return cls(
                stop=StopPlan.from_json(stop) if stop else None,
                deferred=tuple(_intent_from(row) for row in data.get("deferred") or ()),
                rebalance_drift=to_decimal(drift) if drift is not None else None,
                day_start_pending=bool(data.get("day_start_pending", False)),
                rebalance_from=int(data.get("rebalance_from", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DomainError(f"runtime plans are not valid: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RestingLegs:
    """The protection book's native legs: `legs` every one, `quiet` those of groups the OMS
    has not acted on (resting untriggered, nothing filled)."""

    legs: frozenset[str]
    quiet: frozenset[str]


_NO_LEGS = RestingLegs(frozenset(), frozenset())


@dataclass(slots=True, kw_only=True)
class ExecutionModel:
    """One execution as committed. Mutated only by a step's fork; adopted after commit."""

    status: ExecutionStatus
    portfolio: Portfolio
    risk: ExecutionRisk
    orders: dict[str, OrderState]
    """Every order of the execution (terminal ones too: a fill may follow a cancel)."""
    next_seq: int
    version: int
    plans: RuntimePlans = field(default_factory=RuntimePlans)
    protection: ProtectionBook | None = None
    """The protective orders of the execution's positions (None: none configured, or none
    needed yet). Shared by `fork`: a step copies it on first use (`Step.protection`)."""

    def fork(self) -> ExecutionModel:
        """A working copy: portfolio, risk and the order map copied (a step copies an order
        itself before it changes it, see `Step.order`, and the protection book the same
        way); plans are immutable values."""
        return replace(
            self,
            portfolio=self.portfolio.clone(),
            risk=self.risk.clone(),
            orders=dict(self.orders),
        )

    @property
    def running(self) -> bool:
        return self.status.is_running

    @property
    def stopping(self) -> bool:
        return self.plans.stop is not None

    def live_orders(self) -> list[OrderState]:
        return [o for o in self.orders.values() if o.is_live]

    def working_orders(self) -> list[OrderState]:
        """Live orders that are on their way to fill: every live order but the native
        protective legs resting untriggered at the OMS (those may rest for the position's
        whole life; a rebalance or a position check must not wait for them)."""
        quiet = self.resting_legs().quiet
        return [o for o in self.orders.values() if o.is_live and o.client_order_id not in quiet]

    def resting_legs(self) -> RestingLegs:
        """The native legs of the protection book (see `RestingLegs`)."""
        book = self.protection
        if book is None:
            return _NO_LEGS
        legs: set[str] = set()
        quiet: set[str] = set()
        for symbol in book.symbols:
            guard = book.guard(symbol)
            native = None if guard is None else guard.native
            if native is None:
                continue
            ids = [leg.client_order_id for leg in native.legs]
            legs.update(ids)
            if not native.executing:
                quiet.update(ids)
        return RestingLegs(frozenset(legs), frozenset(quiet))

    def pending_sells(self) -> dict[str, Decimal]:
        """Shares per symbol that live SELL orders will still sell (not to be sold twice).
        Native protective legs are not counted: they are reduce-only at the OMS, which never
        lets them sell what another sell already sold (a close or a rebalance may race
        them; the protection book re-arms them at the new size)."""
        legs = self.resting_legs().legs
        pending: dict[str, Decimal] = {}
        for order in self.orders.values():
            if order.is_live and order.intent.side is Side.SELL:
                if order.client_order_id in legs:
                    continue
                sym = order.intent.symbol
                pending[sym] = pending.get(sym, ZERO) + order.remaining_quantity
        return pending

    def exposure(self, market_value: Decimal) -> Decimal:
        """What the risk ledger must hold for the execution: its long market value (at the
        caller's marks), its live buys and the buys waiting for a rate token; nothing once
        it ended."""
        if not self.status.is_running:
            return ZERO
        return market_value + self.buys_in_flight() + self.deferred_buys()

    def executing_legs(self, symbol: str) -> Decimal:
        """What a native protective group the OMS is executing (a leg filled in part) has
        left to sell of `symbol`: its legs share one position, so the most any live leg
        of it still sells; zero when nothing rests or nothing has filled."""
        book = self.protection
        guard = None if book is None else book.guard(symbol)
        native = None if guard is None else guard.native
        if native is None or native.filled <= 0:
            return ZERO
        live = [leg.quantity - leg.filled for leg in native.legs if leg.live]
        return max(live, default=ZERO)

    def buys_in_flight(self) -> Decimal:
        """Remaining notional of live buys at their reference prices."""
        total = ZERO
        for order in self.orders.values():
            if order.is_live and order.intent.side is Side.BUY:
                total += order.remaining_quantity * order.intent.price
        return total

    def deferred_buys(self) -> Decimal:
        """Notional of the buys waiting for a rate token: reserved as if they were live."""
        return sum((i.quantity * i.price for i in self.plans.deferred if i.side is Side.BUY), ZERO)

    def to_state(self, valuation: Valuation, stopped_at: datetime | None) -> ExecutionState:
        """The row the store keeps, at `valuation` (the portfolio at the runner's marks)."""
        pf = self.portfolio
        stop = self.plans.stop
        return ExecutionState(
            status=self.status,
            positions={
                **pf.to_json(),
                "risk": self.risk.to_json(),
                "runtime": self.plans.to_json(),
                # The marks the unrealized P&L was valued at (anyone can check it).
                "marks": {s: money_str(p.mark) for s, p in valuation.positions.items()},
            },
            cash=pf.cash,
            fees=pf.fees,
            realized_pnl=pf.realized_pnl,
            unrealized_pnl=valuation.unrealized_pnl,
            total_pnl=valuation.total_pnl,
            total_trades=pf.total_trades,
            winning_trades=pf.winning_trades,
            losing_trades=pf.losing_trades,
            trading_state=TradingState(self.risk.state.value),
            trading_day=self.risk.trading_day,
            day_start_equity=self.risk.day_start_equity,
            stop_reason=stop.reason if stop else None,
            stopped_at=stopped_at,
        )


def _intent_json(intent: OrderIntent) -> dict[str, Any]:
    return {
        "symbol": intent.symbol,
        "side": intent.side.value,
        "order_type": intent.order_type.value,
        "quantity": money_str(intent.quantity),
        "price": money_str(intent.price),
        "purpose": intent.purpose.value,
        "limit_price": money_str(intent.limit_price) if intent.limit_price else None,
        "execution_id": str(intent.execution_id),
    }


def _intent_from(row: Mapping[str, Any]) -> OrderIntent:
    limit = row.get("limit_price")
    return OrderIntent(
        client_order_id="",
        execution_id=uuid.UUID(str(row["execution_id"])),
        intent_seq=0,
        symbol=str(row["symbol"]),
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        quantity=to_decimal(row["quantity"]),
        price=to_decimal(row["price"]),
        purpose=OrderPurpose(row["purpose"]),
        limit_price=to_decimal(limit) if limit else None,
    )
