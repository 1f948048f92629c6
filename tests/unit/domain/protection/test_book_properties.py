"""Property tests: the book driven against the paper venue over random price paths.

Each example buys a position (filling in slices), then walks a random path with gaps; the
book is serialized and restored at random ticks (a restart), and runs either emulated (the
venue reports only MARKET/LIMIT) or native (the venue holds stops, trails and OCO groups).
After every tick:
- at most one protective exit is live per position: an emulated exit, or one native group,
  never both, never two;
- protective orders never sell more than was bought, and the venue never goes short;
- an open position is never unprotected, except, when the venue rejects orders at random,
  during the back-off before the next exit;
- a trigger releases one exit, plus one more per time the position grew after it (when
  nothing is rejected).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import event, given, settings
from hypothesis import strategies as st

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import (
    OrderIntent,
    OrderPurpose,
    OrderType,
    Side,
)
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.protection import ProtectionBook, ProtectionSpec, ProtectionStep
from strategy_worker.domain.protection.state import Trigger
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.oms_sim.venue import OrderRequest, PaperVenue, SimOrder, VenueRules

EXEC = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOL = "AAPL"
D = Decimal


def to_request(intent: OrderIntent) -> OrderRequest:
    return OrderRequest(
        client_order_id=intent.client_order_id,
        execution_id=intent.execution_id,
        account_id="acct",
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


@dataclass
class Run:
    """The book, the venue and the portfolio of one execution, wired as a runtime would."""

    venue: PaperVenue
    book: ProtectionBook
    spec: ProtectionSpec
    portfolio: Portfolio = field(default_factory=lambda: Portfolio(D(10_000_000)))
    cursor: int = 0
    next_seq: int = 1
    buys: list[SimOrder] = field(default_factory=list)
    exit_ids: set[str] = field(default_factory=set)
    exits_allowed: int = 0
    last_trigger: Trigger | None = None
    now: datetime = T0
    rejections: bool = False

    def buy(self, quantity: int, price: Decimal) -> None:
        cid = f"buy-{len(self.buys)}"
        request = OrderRequest(
            client_order_id=cid,
            execution_id=EXEC,
            account_id="acct",
            symbol=SYMBOL,
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=D(quantity),
            purpose=OrderPurpose.INITIAL.value,
        )
        order, _ = self.venue.submit(request, price=price, now=self.now)
        self.buys.append(order)

    def note_trigger(self) -> None:
        """Count every trigger the book latches: each may release one exit."""
        guard = self.book.guard(SYMBOL)
        trigger = None if guard is None else guard.trigger
        if trigger is not None and trigger != self.last_trigger:
            self.exits_allowed += 1
        self.last_trigger = trigger

    def pump(self) -> None:
        """Apply every new venue report: fills to the portfolio, statuses to the book."""
        for report in self.venue.reports_after(self.cursor):
            self.cursor = report.seq
            if report.fill is not None:
                self.portfolio.apply_fill(report.fill)
                if report.fill.side is Side.BUY and self.last_trigger is not None:
                    self.exits_allowed += 1  # shares bought after a trigger: one more exit
            self.book.on_order(
                report.client_order_id,
                report.status,
                report.filled_quantity,
                at=self.now,
                triggered=report.triggered,
                reason=report.reason,
            )
        position = self.portfolio.positions.get(SYMBOL)
        buying = sum(
            (b.request.quantity - b.filled_quantity for b in self.buys if not b.status.is_terminal),
            ZERO,
        )
        if position is None:
            self.book.on_position(SYMBOL, ZERO, ZERO, buying=buying)
        else:
            self.book.on_position(SYMBOL, position.quantity, position.cost_basis, buying=buying)

    def tick(self, price: Decimal) -> None:
        self.now += timedelta(seconds=1)
        self.venue.on_prices({SYMBOL: price}, now=self.now)
        self.pump()
        self.note_trigger()
        self.book.on_price(SYMBOL, price, self.now)
        self.note_trigger()
        for _ in range(3):  # decide, act, learn; again while it still wants something
            step = self.book.decide(at=self.now, next_seq=self.next_seq)
            self.apply(step, price)
            self.pump()
            self.note_trigger()
            if not (step.intents or step.cancels):
                break

    def apply(self, step: ProtectionStep, price: Decimal) -> None:
        """Send what the step asks, as the runtime does after its commit."""
        self.next_seq += len(step.intents)
        for cid in step.cancels:
            order = self.venue.get(client_order_id=cid)
            assert order is not None  # every intent is submitted in the step that made it
            self.venue.cancel(order, reason="protection", now=self.now)
        natives = [i for i in step.intents if self.book.is_resting_leg(i.client_order_id)]
        exits = [i for i in step.intents if i not in natives]
        if natives:
            self.venue.submit_group(
                [to_request(i) for i in natives], prices={SYMBOL: price}, now=self.now
            )
        for intent in exits:
            self.exit_ids.add(intent.client_order_id)
            self.venue.submit(to_request(intent), price=price, now=self.now)

    def restart(self, capabilities_from: VenueRules) -> None:
        state = json.loads(json.dumps(self.book.to_json()))
        self.book = ProtectionBook.from_json(
            state, execution_id=EXEC, spec=self.spec, capabilities=capabilities_from.capabilities()
        )

    def check(self) -> None:
        orders = self.venue.orders(execution_id=EXEC)
        protective = [
            o for o in orders if OrderPurpose(o.request.purpose or "INITIAL").is_protective
        ]
        live = [o for o in protective if not o.status.is_terminal]
        live_exits = [o for o in live if o.client_order_id in self.exit_ids]
        live_groups = {
            o.request.oco_group_id or o.client_order_id for o in live if o not in live_exits
        }
        assert len(live_exits) + len(live_groups) <= 1, "two protective exits live at once"
        bought = sum((b.filled_quantity for b in self.buys), ZERO)
        sold = sum((o.filled_quantity for o in protective), ZERO)
        assert sold <= bought
        held = self.venue.execution_book(EXEC).net(SYMBOL)
        assert held >= 0
        assert self.portfolio.quantity(SYMBOL) == held
        for symbol in self.book.unprotected({SYMBOL: held}):
            guard = self.book.guard(symbol)
            assert self.rejections, f"{symbol} unprotected"
            assert guard is not None
            assert guard.retry_at is not None
            assert guard.retry_at > self.now  # only while backing off after a rejected exit
        if not self.rejections:
            assert len(self.exit_ids) <= self.exits_allowed


moves = st.one_of(
    st.decimals(min_value=D("-0.02"), max_value=D("0.02"), places=4),  # ordinary ticks
    st.decimals(min_value=D("-0.25"), max_value=D("0.25"), places=4),  # gaps
)


@settings(max_examples=300, deadline=None)
@given(
    native=st.booleans(),
    reject=st.sampled_from([0.0, 0.0, 0.3]),
    seed=st.integers(min_value=0, max_value=1000),
    slices=st.integers(min_value=1, max_value=4),
    legs=st.sampled_from(
        [
            ("0.05", None, None),
            (None, "0.08", None),
            ("0.05", "0.03", "0.10"),
            ("0.1", None, "0.05"),
        ]
    ),
    offset=st.sampled_from([None, "0.01"]),
    path=st.lists(moves, min_size=5, max_size=40),
    restarts=st.sets(st.integers(min_value=0, max_value=40), max_size=4),
    add_at=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
)
def test_every_position_has_one_exit_per_trigger_and_is_never_unprotected(
    native: bool,
    reject: float,
    seed: int,
    slices: int,
    legs: tuple[str | None, str | None, str | None],
    offset: str | None,
    path: list[Decimal],
    restarts: set[int],
    add_at: int | None,
) -> None:
    stop, trail, take = legs
    rules = VenueRules(
        partial_fill_slices=slices,
        native_types=frozenset(OrderType if native else (OrderType.MARKET, OrderType.LIMIT)),
        contingent=native,
        rejection_rate=reject,
    )
    spec = ProtectionSpec(
        stop_loss_pct=None if stop is None else D(stop),
        trailing_stop_pct=None if trail is None else D(trail),
        take_profit_pct=None if take is None else D(take),
        limit_offset_pct=None if offset is None else D(offset),
        placement=ProtectionPlacement.AUTO,
        native_grace_s=3.0,
    )
    venue = PaperVenue(rules, seed=seed)
    book = ProtectionBook(EXEC, spec, capabilities=rules.capabilities())
    run = Run(venue=venue, book=book, spec=spec, rejections=reject > 0)
    price = D(100)
    run.buy(100, price)
    run.pump()
    run.check()
    for tick, move in enumerate(path):
        price = max(D("1.00"), (price * (1 + move)).quantize(D("0.01")))
        if tick == add_at:
            run.buy(50, price)
        run.tick(price)
        if tick in restarts:
            run.restart(rules)
        run.check()
    event(f"native={native} reject={reject} triggered={run.exits_allowed > 0}")
    event(f"exits released: {len(run.exit_ids)}")
    event(f"flat at the end: {run.venue.execution_book(EXEC).net(SYMBOL) == 0}")
