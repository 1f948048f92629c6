"""The paper venue's matching rules: pure, synchronous and deterministic (no I/O, no clock).

Every order ever accepted stays in the order log; every change produces an execution report
with the next global, gap-free sequence number; positions and cash per account and per
execution move only through fills, so they always agree with the fills. Fill ids are
`<oms order id>-F<n>`: unique across the venue for as long as it lives (it is in memory: a new
venue numbers its orders from 1 again).

Contract 1.1 (resting stops, trailing stops, reduce-only, OCO groups, brackets) follows
`contingent.py`; `VenueRules.native_types` and `contingent` switch them off, so the worker's
emulation can be exercised against the same venue.
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
from strategy_worker.domain.orders import (
    Fill,
    OmsCapabilities,
    OmsOrder,
    OrderStatus,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.errors import DomainError, ValidationError
from strategy_worker.oms_sim import contingent
from strategy_worker.oms_sim.books import PositionBook

_BPS = Decimal(10_000)


class ReportType(StrEnum):
    ACCEPTED = "ACCEPTED"
    FILL = "FILL"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    TRIGGERED = "TRIGGERED"


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
    #: Order types held natively; the others are refused (INVALID_ARGUMENT).
    native_types: frozenset[OrderType] = frozenset(OrderType)
    #: Parents (brackets) and OCO groups honoured; off, they are refused.
    contingent: bool = True

    def capabilities(self) -> OmsCapabilities:
        """What GetCapabilities answers for these rules (reduce-only is always honoured)."""
        return OmsCapabilities(
            order_types=self.native_types,
            oco_groups=self.contingent,
            brackets=self.contingent,
            reduce_only=True,
            order_groups=True,
            contract_version="1.1",
        )


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
    stop_price: Decimal | None = None
    trail: Trail | None = None
    parent_client_order_id: str = ""
    oco_group_id: str = ""
    reduce_only: bool = False


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
    triggered: bool = False
    #: TRAILING_STOP: the best price trailed so far.
    watermark: Decimal | None = None
    #: A triggered stop's level, and the limit it then works at (None: MARKET).
    triggered_level: Decimal | None = None
    working_limit: Decimal | None = None
    #: Set by the venue: what the order may fill now (a bracket child / OCO member's share).
    active: Decimal = ZERO

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id

    @property
    def stop_level(self) -> Decimal | None:
        """The trigger level: where it triggered, else where it would trigger now."""
        if self.triggered_level is not None:
            return self.triggered_level
        return contingent.stop_level(self)

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
            stop_price=self.stop_level,
            trail=req.trail,
            parent_client_order_id=req.parent_client_order_id,
            oco_group_id=req.oco_group_id,
            reduce_only=req.reduce_only,
            active_quantity=self.active,
            triggered=self.triggered,
            watermark=self.watermark,
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
    triggered: bool = False
    stop_price: Decimal | None = None
    active_quantity: Decimal = ZERO


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
        # Contingent links: (execution, OCO group id) -> members; parent id -> children.
        self._groups: dict[tuple[uuid.UUID, str], list[SimOrder]] = {}
        self._children: dict[str, list[SimOrder]] = {}

    @property
    def rules(self) -> VenueRules:
        return self._rules

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
        [(order, duplicate)] = self.submit_group([request], prices={request.symbol: price}, now=now)
        return order, duplicate

    def submit_group(
        self,
        requests: list[OrderRequest],
        *,
        prices: Mapping[str, Decimal | None],
        now: datetime,
    ) -> list[tuple[SimOrder, bool]]:
        """Accept several orders atomically: every one is validated before any is created.

        All already held (and equal): returned as duplicates. Some held and some not, or a
        held id naming a different order: ClientOrderIdReusedError (nothing is created).
        """
        held = [self._orders.get(r.client_order_id) for r in requests]
        for request, existing in zip(requests, held, strict=True):
            if existing is not None and existing.request != request:
                raise ClientOrderIdReusedError(
                    f"client_order_id {request.client_order_id!r} already names a different order"
                )
        if all(existing is not None for existing in held):
            return [(existing, True) for existing in held if existing is not None]
        if any(existing is not None for existing in held):
            raise ClientOrderIdReusedError("part of this order group is already held")
        self._validate_group(requests)
        return [(self._accept(r, prices.get(r.symbol), now), False) for r in requests]

    def cancel(self, order: SimOrder, *, reason: str, now: datetime) -> SimOrder:
        """Cancel what is left of a working order; a finished order is returned unchanged.
        Only this order: its OCO siblings keep working, and a cancelled parent's children
        keep protecting what it filled (they end with it when it filled nothing)."""
        if order.status.is_terminal:
            return order
        order.slices.clear()
        self._finish(order, OrderStatus.CANCELLED, ReportType.CANCELLED, reason or "CANCELLED", now)
        return order

    def _validate_group(self, requests: list[OrderRequest]) -> None:
        rules = self._rules
        pending: dict[str, OrderRequest] = {}
        members: dict[tuple[uuid.UUID, str], list[OrderRequest]] = {}
        for key, orders in self._groups.items():
            members[key] = [o.request for o in orders]
        for request in requests:
            _validate(request)
            contingent.validate_shape(request, native_types=rules.native_types)
            parent: OrderRequest | None = pending.get(request.parent_client_order_id)
            if parent is None and request.parent_client_order_id:
                held = self._orders.get(request.parent_client_order_id)
                parent = None if held is None else held.request
                if held is not None and held.status.is_terminal and held.filled_quantity == 0:
                    raise ValidationError(f"parent {held.client_order_id!r} filled nothing")
            key = (request.execution_id, request.oco_group_id)
            group = members.get(key, []) if request.oco_group_id else []
            contingent.validate_links(
                request, contingent=rules.contingent, parent=parent, group=group
            )
            if request.oco_group_id:
                members.setdefault(key, []).append(request)
            pending[request.client_order_id] = request

    def _accept(self, request: OrderRequest, price: Decimal | None, now: datetime) -> SimOrder:
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
        if request.oco_group_id:
            self._groups.setdefault((request.execution_id, request.oco_group_id), []).append(order)
        if request.parent_client_order_id:
            self._children.setdefault(request.parent_client_order_id, []).append(order)
        order.active = self._active(order)
        if self._rules.rejection_rate > 0 and self._rng.random() < self._rules.rejection_rate:
            self._finish(order, OrderStatus.REJECTED, ReportType.REJECTED, "SIMULATED_REJECT", now)
            return order
        waits = request.order_type.is_resting_stop or bool(request.parent_client_order_id)
        if price is None and not waits:
            self._finish(order, OrderStatus.REJECTED, ReportType.REJECTED, "NO_PRICE", now)
            return order
        order.status = OrderStatus.ACCEPTED
        order.slices = _slices(request.quantity, self._rules.partial_fill_slices)
        contingent.start_trail(order, price)
        self._report(order, ReportType.ACCEPTED, now)
        self._working.setdefault(request.symbol, []).append(order)
        if request.parent_client_order_id:
            self._settle(order, now)  # a child of a parent that is already done ends with it
        if price is not None:
            self._try_fill(order, price, now)
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
        """Fill the order's next slice if the price allows; one slice per price tick.

        A resting stop first ratchets (trailing) and may trigger on this tick; what it may fill
        is capped by its group's share (`_active`) and, reduce-only, by the position.
        """
        req = order.request
        if order.status.is_terminal or self._active(order) <= ZERO:
            return 0  # a child waits for its parent's fills before it even watches the price
        if req.order_type.is_resting_stop and not order.triggered:
            if not contingent.observe(order, price):
                return 0
            self._report(order, ReportType.TRIGGERED, now)
        fill_price = self._slipped(price, req.side)
        limit = contingent.working_limit(order)
        if limit is not None:
            if req.side is Side.BUY:
                if price > limit:
                    return 0
                fill_price = min(fill_price, limit)
            else:
                if price < limit:
                    return 0
                fill_price = max(fill_price, limit)
        if not order.slices:
            return 0
        quantity = min(order.slices[0], self._active(order))
        if quantity <= ZERO:
            return 0
        book = self._executions.get(req.execution_id)
        cap = contingent.reduce_cap(order, book.net(req.symbol) if book else ZERO)
        if cap is not None:
            if cap <= ZERO:
                order.slices.clear()
                self._finish(order, OrderStatus.CANCELLED, ReportType.CANCELLED, "REDUCE_ONLY", now)
                return 0
            quantity = min(quantity, cap)
        if quantity == order.slices[0]:
            order.slices.pop(0)
        else:
            order.slices[0] -= quantity
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
        for member in self._members(order):
            member.active = self._active(member)
        self._report(order, ReportType.FILL, now, fill=fill)
        self._settle(order, now)
        book = self._executions[req.execution_id]
        if not order.status.is_terminal and contingent.reduce_cap(order, book.net(req.symbol)) == 0:
            order.slices.clear()  # the position is gone: a reduce-only order has nothing left
            self._finish(order, OrderStatus.CANCELLED, ReportType.CANCELLED, "REDUCE_ONLY", now)
        return 1

    # -- contingent groups -----------------------------------------------------------------

    def _members(self, order: SimOrder) -> list[SimOrder]:
        """The order's OCO group (itself alone when it has none)."""
        req = order.request
        if req.oco_group_id:
            return self._groups[(req.execution_id, req.oco_group_id)]
        return [order]

    def _parent(self, order: SimOrder) -> SimOrder | None:
        parent_id = order.request.parent_client_order_id
        return self._orders.get(parent_id) if parent_id else None

    def _active(self, order: SimOrder) -> Decimal:
        """What the order may fill now: its base (the parent's fills for a child, else its
        quantity) minus what its whole OCO group has filled; 0 once it is finished."""
        if order.status.is_terminal:
            return ZERO
        parent = self._parent(order)
        base = parent.filled_quantity if parent is not None else order.request.quantity
        filled = sum((m.filled_quantity for m in self._members(order)), ZERO)
        return max(base - filled, ZERO)

    def _settle(self, order: SimOrder, now: datetime) -> None:
        """After a fill or an end: finish the members that can never fill again, and let the
        children of a parent follow it (more to fill, or the end of what it filled)."""
        for child in self._children.get(order.client_order_id, ()):
            child.active = self._active(child)
        groups = [self._members(order)]
        groups += [self._members(c) for c in self._children.get(order.client_order_id, ())]
        for members in groups:
            for member in list(members):
                if member.status.is_terminal or self._active(member) > 0:
                    continue
                parent = self._parent(member)
                if parent is not None and not parent.status.is_terminal:
                    continue  # the parent may fill more: the child waits for it
                # A sibling's fills used up its share (OCO), or its parent is done (PARENT_DONE:
                # it filled nothing, or this child already sold all the parent bought).
                others = any(m is not member and m.filled_quantity > 0 for m in members)
                reason = "OCO" if others else "PARENT_DONE"
                member.slices.clear()
                self._finish(member, OrderStatus.CANCELLED, ReportType.CANCELLED, reason, now)

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
        order.active = ZERO
        self._unwork(order)
        self._report(order, kind, now, reason=reason)
        self._settle(order, now)

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
                triggered=order.triggered,
                stop_price=order.stop_level,
                active_quantity=order.active,
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
