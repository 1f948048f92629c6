"""The paper venue's matching rules: pure, synchronous and deterministic (no I/O, no clock).

Every order ever accepted stays in the order log; every change produces an execution report
with the next global, gap-free sequence number; positions and cash per account and per
execution move only through fills, so they always agree with the fills.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from strategy_worker.domain.money import ZERO, floor_quantity, quantize_price
from strategy_worker.domain.orders import Fill, OmsOrder, OrderStatus, OrderType, Side
from strategy_worker.errors import DomainError, ValidationError

_BPS = Decimal(10_000)


class ReportType(StrEnum):
    ACCEPTED = "ACCEPTED"
    FILL = "FILL"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class ClientOrderIdReusedError(DomainError):
    """A client order id came back with a different order: refused, never merged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueRules:
    """The subset of the simulator's configuration that decides fills and fees."""

    slippage_bps: Decimal = ZERO
    fee_bps: Decimal = ZERO
    fee_per_share: Decimal = ZERO
    partial_fill_slices: int = 1
    rejection_rate: float = 0.0
    initial_cash: Decimal = ZERO


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """A new order as the venue receives it (already parsed from the wire)."""

    client_order_id: str
    execution_id: uuid.UUID
    account_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    purpose: str = ""


@dataclass(slots=True, kw_only=True)
class SimOrder:
    """The venue's live record of an order; read it, never mutate it from outside."""

    request: OrderRequest
    oms_order_id: str
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    filled_quantity: Decimal = ZERO
    filled_notional: Decimal = ZERO
    fills: list[Fill] = field(default_factory=list)
    reason: str = ""
    slices: list[Decimal] = field(default_factory=list)

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id

    @property
    def avg_fill_price(self) -> Decimal:
        if self.filled_quantity == ZERO:
            return ZERO
        return quantize_price(self.filled_notional / self.filled_quantity)

    def snapshot(self) -> OmsOrder:
        req = self.request
        return OmsOrder(
            client_order_id=req.client_order_id,
            oms_order_id=self.oms_order_id,
            execution_id=req.execution_id,
            account_id=req.account_id,
            symbol=req.symbol,
            side=req.side,
            order_type=req.order_type,
            quantity=req.quantity,
            limit_price=req.limit_price,
            status=self.status,
            filled_quantity=self.filled_quantity,
            avg_fill_price=self.avg_fill_price,
            fills=tuple(self.fills),
            reason=self.reason,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueReport:
    """One execution report, frozen at the moment it happened."""

    seq: int
    report_type: ReportType
    client_order_id: str
    oms_order_id: str
    execution_id: uuid.UUID
    account_id: str
    symbol: str
    side: Side
    status: OrderStatus
    filled_quantity: Decimal
    avg_fill_price: Decimal
    reported_at: datetime
    fill: Fill | None = None
    reason: str = ""


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


class PaperVenue:
    """Accepts, fills, rejects and cancels orders against prices handed to it."""

    def __init__(self, rules: VenueRules, *, seed: int = 0) -> None:
        self._rules = rules
        self._rng = random.Random(seed)
        self._orders: dict[str, SimOrder] = {}
        # Orders by execution, in arrival order: reconciliation asks per execution, and a
        # scan of every order per question made 10,000 executions quadratic.
        self._by_execution: dict[uuid.UUID, list[SimOrder]] = {}
        self._by_oms_id: dict[str, SimOrder] = {}
        self._working: dict[str, list[SimOrder]] = {}
        self._reports: list[VenueReport] = []
        self._accounts: dict[str, PositionBook] = {}
        self._executions: dict[uuid.UUID, PositionBook] = {}
        self._fill_count = 0

    # -- queries ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return len(self._reports)

    def reports_after(self, seq: int, limit: int | None = None) -> list[VenueReport]:
        """Reports with a sequence number above `seq` (seq n lives at index n-1)."""
        start = max(seq, 0)
        end = None if limit is None else start + limit
        return self._reports[start:end]

    @property
    def order_log(self) -> list[str]:
        """Client order ids of every order ever accepted, in arrival order."""
        return list(self._orders)

    def get(self, *, client_order_id: str = "", oms_order_id: str = "") -> SimOrder | None:
        if client_order_id:
            return self._orders.get(client_order_id)
        return self._by_oms_id.get(oms_order_id)

    def orders(
        self, *, execution_id: uuid.UUID | None = None, status: OrderStatus | None = None
    ) -> list[SimOrder]:
        pool = (
            self._orders.values()
            if execution_id is None
            else self._by_execution.get(execution_id, ())
        )
        return [o for o in pool if status is None or o.status is status]

    def working_symbols(self) -> list[str]:
        return [sym for sym, orders in self._working.items() if orders]

    def account_book(self, account_id: str) -> PositionBook:
        return self._accounts.get(account_id) or PositionBook(cash=self._rules.initial_cash)

    def execution_book(self, execution_id: uuid.UUID) -> PositionBook:
        return self._executions.get(execution_id) or PositionBook(cash=ZERO)

    # -- commands --------------------------------------------------------------------------

    def submit(
        self, request: OrderRequest, *, price: Decimal | None, now: datetime
    ) -> tuple[SimOrder, bool]:
        """Accept (or reject) a new order; returns (order, duplicate).

        A known client order id returns the existing order unchanged (duplicate=True);
        the same id with a different order raises ClientOrderIdReusedError.
        """
        existing = self._orders.get(request.client_order_id)
        if existing is not None:
            if existing.request != request:
                raise ClientOrderIdReusedError(
                    f"client_order_id {request.client_order_id!r} already names a different order"
                )
            return existing, True
        _validate(request)
        order = SimOrder(
            request=request,
            oms_order_id=f"SIM-{len(self._orders) + 1:010d}",
            status=OrderStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        self._orders[request.client_order_id] = order
        self._by_execution.setdefault(request.execution_id, []).append(order)
        self._by_oms_id[order.oms_order_id] = order
        if self._rules.rejection_rate > 0 and self._rng.random() < self._rules.rejection_rate:
            self._finish(order, OrderStatus.REJECTED, ReportType.REJECTED, "SIMULATED_REJECT", now)
            return order, False
        if price is None:
            self._finish(order, OrderStatus.REJECTED, ReportType.REJECTED, "NO_PRICE", now)
            return order, False
        order.status = OrderStatus.ACCEPTED
        order.slices = _slices(request.quantity, self._rules.partial_fill_slices)
        self._report(order, ReportType.ACCEPTED, now)
        self._working.setdefault(request.symbol, []).append(order)
        self._try_fill(order, price, now)
        return order, False

    def cancel(self, order: SimOrder, *, reason: str, now: datetime) -> SimOrder:
        """Cancel what is left of a working order; a finished order is returned unchanged."""
        if order.status.is_terminal:
            return order
        order.slices.clear()
        self._finish(order, OrderStatus.CANCELLED, ReportType.CANCELLED, reason or "CANCELLED", now)
        return order

    def fill_after_cancel(self, order: SimOrder, *, price: Decimal, now: datetime) -> Fill | None:
        """The race every OMS has: the rest of an order filled just before its cancel
        landed, and the fill is reported after the cancel. Booked like any fill (it is
        real money); the order stays CANCELLED with the larger filled quantity."""
        remaining = order.request.quantity - order.filled_quantity
        if order.status is not OrderStatus.CANCELLED or remaining <= ZERO:
            return None
        order.slices = [remaining]
        self._working.setdefault(order.request.symbol, []).append(order)
        self._try_fill(order, price, now)
        self._unwork(order)
        if not order.filled_quantity >= order.request.quantity:
            order.status = OrderStatus.CANCELLED
        return order.fills[-1] if order.fills else None

    def on_prices(self, prices: Mapping[str, Decimal], *, now: datetime) -> int:
        """Match working orders against fresh prices; returns the number of fills."""
        fills = 0
        for symbol, price in prices.items():
            for order in list(self._working.get(symbol, ())):
                fills += self._try_fill(order, price, now)
        return fills

    # -- internals -------------------------------------------------------------------------

    def _try_fill(self, order: SimOrder, price: Decimal, now: datetime) -> int:
        """Fill the order's next slice if the price allows; one slice per price tick."""
        req = order.request
        fill_price = self._slipped(price, req.side)
        if req.order_type is OrderType.LIMIT:
            assert req.limit_price is not None
            if req.side is Side.BUY:
                if price > req.limit_price:
                    return 0
                fill_price = min(fill_price, req.limit_price)
            else:
                if price < req.limit_price:
                    return 0
                fill_price = max(fill_price, req.limit_price)
        if not order.slices:
            return 0
        quantity = order.slices.pop(0)
        self._fill_count += 1
        fill = Fill(
            fill_id=f"{order.oms_order_id}-F{len(order.fills) + 1}",
            client_order_id=req.client_order_id,
            symbol=req.symbol,
            side=req.side,
            quantity=quantity,
            price=fill_price,
            fee=self._fee(quantity, fill_price),
            filled_at=now,
        )
        order.fills.append(fill)
        order.filled_quantity += quantity
        order.filled_notional += fill.notional
        order.updated_at = now
        self._accounts.setdefault(req.account_id, PositionBook(cash=self._rules.initial_cash))
        self._accounts[req.account_id].apply(fill)
        self._executions.setdefault(req.execution_id, PositionBook(cash=ZERO)).apply(fill)
        if order.filled_quantity >= req.quantity:
            order.status = OrderStatus.FILLED
            self._unwork(order)
        else:
            order.status = OrderStatus.PARTIALLY_FILLED
        self._report(order, ReportType.FILL, now, fill=fill)
        return 1

    def _slipped(self, price: Decimal, side: Side) -> Decimal:
        """Buys pay up, sells receive less, by slippage_bps; rounded to the price quantum."""
        shift = price * self._rules.slippage_bps / _BPS
        return quantize_price(price + shift if side is Side.BUY else price - shift)

    def _fee(self, quantity: Decimal, price: Decimal) -> Decimal:
        return quantity * price * self._rules.fee_bps / _BPS + quantity * self._rules.fee_per_share

    def _finish(
        self, order: SimOrder, status: OrderStatus, kind: ReportType, reason: str, now: datetime
    ) -> None:
        order.status = status
        order.reason = reason
        order.updated_at = now
        self._unwork(order)
        self._report(order, kind, now, reason=reason)

    def _unwork(self, order: SimOrder) -> None:
        working = self._working.get(order.request.symbol)
        if working and order in working:
            working.remove(order)

    def _report(
        self,
        order: SimOrder,
        kind: ReportType,
        now: datetime,
        *,
        fill: Fill | None = None,
        reason: str = "",
    ) -> None:
        req = order.request
        self._reports.append(
            VenueReport(
                seq=len(self._reports) + 1,
                report_type=kind,
                client_order_id=req.client_order_id,
                oms_order_id=order.oms_order_id,
                execution_id=req.execution_id,
                account_id=req.account_id,
                symbol=req.symbol,
                side=req.side,
                status=order.status,
                filled_quantity=order.filled_quantity,
                avg_fill_price=order.avg_fill_price,
                reported_at=now,
                fill=fill,
                reason=reason,
            )
        )


def _validate(request: OrderRequest) -> None:
    if not request.client_order_id:
        raise ValidationError("client_order_id is required")
    if not request.account_id:
        raise ValidationError("account_id is required")
    if not request.symbol:
        raise ValidationError("symbol is required")
    if request.quantity <= ZERO:
        raise ValidationError(f"quantity must be positive, got {request.quantity}")
    if request.order_type is OrderType.LIMIT:
        if request.limit_price is None or request.limit_price <= ZERO:
            raise ValidationError("a LIMIT order needs a positive limit_price")
    elif request.limit_price is not None:
        raise ValidationError("a MARKET order takes no limit_price")


def _slices(quantity: Decimal, count: int) -> list[Decimal]:
    """Split a quantity into `count` whole-share slices, the remainder in the last one."""
    if count <= 1:
        return [quantity]
    size = floor_quantity(quantity / count)
    if size <= ZERO:
        return [quantity]
    return [size] * (count - 1) + [quantity - size * (count - 1)]


def fills_of(orders: Iterable[SimOrder]) -> list[Fill]:
    """Every fill of the given orders, in order (used to re-derive positions in checks)."""
    return [fill for order in orders for fill in order.fills]
