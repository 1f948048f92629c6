"""`OmsGateway` in process: the paper venue (`oms_sim.venue.PaperVenue`) behind the port,
with the faults a real OMS shows, each switchable and seeded.

Native protection (contract 1.1: STOP, STOP_LIMIT, TRAILING_STOP, OCO groups, reduce-only,
`submit_group`) is the paper venue's own: `native_protection=True` holds every type and
group and triggers them on the prices `tick` hands it; False (the default) is an OMS that
holds MARKET and LIMIT only (reduce-only stays), so the worker emulates its protection
against the same venue. `capabilities()` answers what the venue's rules hold.

- `down_until`: every call fails, retryable (the OMS unreachable, a breaker open);
- `stall_s`: a submit is processed, then its answer is late (a timeout after processing is
  the classic unknown outcome: the order exists although the caller saw an error);
- `reject_rate`: a new order is rejected; `rules` of the venue: partial fills (slices),
  slippage, fees;
- `late_fill_on_cancel`: a cancel races a fill, which is reported after the cancel
  (`PaperVenue.fill_after_cancel`);
- `overfill_rate`: a fill report claiming more than the order's quantity (never booked by
  the venue: an anomaly the worker must refuse);
- `restart()`: the OMS restarts; fill ids of new fills begin again, so ids collide across
  orders (a fill id is unique per order only).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from strategy_worker.domain.orders import (
    ExecutionReport,
    Fill,
    OmsCapabilities,
    OmsOrder,
    OrderIntent,
    OrderType,
)
from strategy_worker.errors import DomainError, OmsError, ValidationError
from strategy_worker.oms_sim.venue import OrderRequest, PaperVenue, SimOrder, VenueRules
from strategy_worker.ports import SubmitEntry, SubmitOutcome

_BASIC = frozenset({OrderType.MARKET, OrderType.LIMIT})


class SimOms:
    """The paper venue as the worker's OMS (see the module docstring)."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime],
        prices: Callable[[str], Decimal | None],
        rules: VenueRules | None = None,
        seed: int = 0,
        native_protection: bool | None = None,
    ) -> None:
        rules = rules or VenueRules(native_types=_BASIC, contingent=False)
        if native_protection is not None:
            rules = replace(
                rules,
                native_types=frozenset(OrderType) if native_protection else _BASIC,
                contingent=native_protection,
            )
        self.venue = PaperVenue(rules, seed=seed)
        self._now = now
        self._price = prices
        self._rng = random.Random(seed + 1)
        self._seed = seed
        self._changed = asyncio.Event()
        self.down_until = float("-inf")
        self.stall_s = 0.0
        self.reject_rate = 0.0
        self.late_fill_on_cancel = 0.0
        self.overfill_rate = 0.0
        self._fill_counter = 0
        self._public: dict[str, str] = {}
        self._public_fills: dict[str, Fill] = {}
        self.received: list[tuple[float, OrderIntent]] = []
        """Every submit the venue processed (first time per client order id), for checks."""
        self.on_receive: Callable[[OrderIntent], None] = lambda intent: None

    # ------------------------------------------------------------------ faults

    def _enter(self) -> None:
        if self._now().timestamp() < self.down_until:
            raise OmsError("OMS unavailable (simulated)", retryable=True)

    def restart(self) -> None:
        """The OMS restarts: orders, fills and positions are kept (it is durable), but the
        ids it gives NEW fills start again, so they collide with older fills of other
        orders. A fill already reported keeps its id forever."""
        self._fill_counter = 0

    # ------------------------------------------------------------------ OmsGateway

    async def submit(self, intent: OrderIntent, *, account_id: str) -> OmsOrder:
        return (await self.submit_many([intent], account_id=account_id))[0]

    async def submit_many(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        outcomes = await self.submit_batch([SubmitEntry((i,), account_id) for i in intents])
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
        return [o.orders[0] for o in outcomes]

    async def submit_batch(self, entries: Sequence[SubmitEntry]) -> list[SubmitOutcome]:
        """Every entry in order, in one call (the faults apply to the call as a whole,
        as to one OrderBatch: down, the whole batch fails; stalled, all of it was
        processed and the answer is lost). A group is held all or none, as the venue's
        rules allow (`capabilities()`); a refused entry is an error, never retried."""
        self._enter()
        now = self._now()
        out: list[SubmitOutcome] = []
        for entry in entries:
            try:
                if entry.group:
                    orders = self._submit_group(entry, now)
                else:
                    orders = (self._submit_one(entry, now),)
            except (DomainError, ValidationError) as exc:  # INVALID_ARGUMENT: never retried
                out.append(SubmitOutcome(error=OmsError(f"OMS refused: {exc}", retryable=False)))
                continue
            out.append(SubmitOutcome(orders=orders))
        return await self._answer(out)

    async def submit_group(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        """The orders atomically (SubmitOrderGroup): all accepted or none (refused:
        INVALID_ARGUMENT, not retryable); idempotent like `submit`."""
        [outcome] = await self.submit_batch([SubmitEntry(tuple(intents), account_id, group=True)])
        if outcome.error is not None:
            raise outcome.error
        return list(outcome.orders)

    async def capabilities(self) -> OmsCapabilities:
        """What the venue's rules hold (see the module docstring)."""
        self._enter()
        return self.venue.rules.capabilities()

    def _submit_one(self, entry: SubmitEntry, now: datetime) -> OmsOrder:
        [intent] = entry.intents
        known = self.venue.get(client_order_id=intent.client_order_id) is not None
        if not known:
            self._received(intent, now)
        price = self._price(intent.symbol)
        if not known and self.reject_rate and self._rng.random() < self.reject_rate:
            price = None  # the venue rejects it (NO_PRICE), as an OMS may at any time
        order, _ = self.venue.submit(_request(intent, entry.account_id), price=price, now=now)
        return self._view(order)

    def _submit_group(self, entry: SubmitEntry, now: datetime) -> tuple[OmsOrder, ...]:
        intents = entry.intents
        requests = [_request(i, entry.account_id) for i in intents]
        fresh = [i for i in intents if self.venue.get(client_order_id=i.client_order_id) is None]
        prices = {i.symbol: self._price(i.symbol) for i in intents}
        held = self.venue.submit_group(requests, prices=prices, now=now)
        for intent in fresh:
            self._received(intent, now)
        return tuple(self._view(order) for order, _ in held)

    def _received(self, intent: OrderIntent, now: datetime) -> None:
        self.on_receive(intent)
        self.received.append((now.timestamp(), intent))

    async def _answer(self, out: list[SubmitOutcome]) -> list[SubmitOutcome]:
        self._changed.set()
        if self.stall_s > 0:
            await asyncio.sleep(self.stall_s)
            raise OmsError("deadline exceeded after processing (simulated)", retryable=True)
        return out

    async def cancel(self, client_order_id: str) -> OmsOrder:
        self._enter()
        order = self.venue.get(client_order_id=client_order_id)
        if order is None:
            raise OmsError(f"unknown order {client_order_id}", retryable=False)
        late = not order.status.is_terminal and self._rng.random() < self.late_fill_on_cancel
        now = self._now()
        self.venue.cancel(order, reason="CANCEL_REQUESTED", now=now)
        price = self._price(order.request.symbol)
        if late and price is not None:
            self.venue.fill_after_cancel(order, price=price, now=now)
        self._changed.set()
        return self._view(order)

    async def get_order(self, client_order_id: str) -> OmsOrder | None:
        self._enter()
        order = self.venue.get(client_order_id=client_order_id)
        return self._view(order) if order else None

    async def list_orders(self, execution_id: uuid.UUID) -> list[OmsOrder]:
        self._enter()
        return [self._view(o) for o in self.venue.orders(execution_id=execution_id)]

    async def get_positions(self, execution_id: uuid.UUID) -> dict[str, Decimal]:
        self._enter()
        return self.venue.execution_book(execution_id).net_positions()

    async def reports(self, *, from_seq: int) -> AsyncIterator[ExecutionReport]:
        seq = from_seq
        while True:
            batch = self._reports_after(seq)
            if not batch:
                self._changed.clear()
                await self._changed.wait()
                continue
            for report in batch:
                seq = report.seq
                yield report

    async def ping(self) -> bool:
        return self._now().timestamp() >= self.down_until

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ the market

    def tick(self, prices: Mapping[str, Decimal]) -> int:
        """Working orders meet new prices; returns fills made."""
        fills = self.venue.on_prices(prices, now=self._now())
        if fills:
            self._changed.set()
        return fills

    # ------------------------------------------------------------------ internals

    def _reports_after(self, seq: int) -> list[ExecutionReport]:
        """Venue report n is stream seq 2n; an injected overfill of it is 2n + 1."""
        out = []
        for report in self.venue.reports_after(seq // 2):
            fill = self._published(report.fill) if report.fill is not None else None
            out.append(
                ExecutionReport(
                    seq=report.seq * 2,
                    client_order_id=report.client_order_id,
                    oms_order_id=report.oms_order_id,
                    execution_id=report.execution_id,
                    status=report.status,
                    filled_quantity=report.filled_quantity,
                    avg_fill_price=report.avg_fill_price,
                    fill=fill,
                    reason=report.reason,
                    triggered=report.triggered,
                    stop_price=report.stop_price,
                    active_quantity=report.active_quantity,
                )
            )
            # Decided per report, the same for every reader of the stream.
            if (
                fill is not None
                and random.Random(self._seed * 1_000_003 + report.seq).random() < self.overfill_rate
            ):
                out.append(self._overfill(report.seq * 2 + 1, out[-1]))
        return [r for r in out if r.seq > seq]

    def _overfill(self, seq: int, report: ExecutionReport) -> ExecutionReport:
        order = self.venue.get(client_order_id=report.client_order_id)
        assert order is not None
        assert report.fill is not None
        bogus = replace(
            report.fill,
            fill_id=f"{report.fill.fill_id}-X",
            quantity=order.request.quantity + 1,
        )
        return replace(report, seq=seq, fill=bogus)

    def _published(self, fill: Fill) -> Fill:
        """The id the OMS gives a fill: from a counter that restarts with the OMS (unique
        per order, as the contract says, not globally)."""
        known = self._public_fills.get(fill.fill_id)
        if known is not None:
            return known
        public = self._public.get(fill.fill_id)
        if public is None:
            order = self.venue.get(client_order_id=fill.client_order_id)
            taken = {self._public.get(f.fill_id) for f in order.fills} if order else set()
            self._fill_counter += 1
            while f"F{self._fill_counter}" in taken:
                self._fill_counter += 1
            public = f"F{self._fill_counter}"
            self._public[fill.fill_id] = public
        renamed = replace(fill, fill_id=public)
        self._public_fills[fill.fill_id] = renamed
        return renamed

    def _view(self, order: SimOrder) -> OmsOrder:
        view = order.snapshot()
        return replace(view, fills=tuple(self._published(f) for f in view.fills))


def _request(intent: OrderIntent, account_id: str) -> OrderRequest:
    return OrderRequest(
        client_order_id=intent.client_order_id,
        execution_id=intent.execution_id,
        account_id=account_id,
        symbol=intent.symbol,
        side=intent.side,
        order_type=intent.order_type,
        quantity=intent.quantity,
        limit_price=intent.limit_price,
        purpose=intent.purpose.value,
        stop_price=intent.stop_price,
        trail=intent.trail,
        parent_client_order_id=intent.parent_client_order_id,
        oco_group_id=intent.oco_group_id,
        reduce_only=intent.reduce_only,
    )
