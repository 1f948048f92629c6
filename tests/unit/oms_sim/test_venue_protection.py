"""PaperVenue, contract 1.1: resting stops, trailing stops, reduce-only, OCO and brackets."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.orders import OrderStatus, OrderType, Side, Trail
from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim.venue import (
    ClientOrderIdReusedError,
    OrderRequest,
    PaperVenue,
    ReportType,
    VenueRules,
)

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
EXEC = uuid.UUID("00000000-0000-4000-8000-000000000001")
D = Decimal


def req(
    cid: str,
    *,
    side: Side = Side.SELL,
    qty: str = "100",
    order_type: OrderType = OrderType.MARKET,
    limit: str | None = None,
    stop: str | None = None,
    trail: Trail | None = None,
    parent: str = "",
    oco: str = "",
    reduce_only: bool = False,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        execution_id=EXEC,
        account_id="acct-1",
        symbol="AAPL",
        side=side,
        order_type=order_type,
        quantity=D(qty),
        limit_price=None if limit is None else D(limit),
        stop_price=None if stop is None else D(stop),
        trail=trail,
        parent_client_order_id=parent,
        oco_group_id=oco,
        reduce_only=reduce_only,
    )


def venue(**rules: object) -> PaperVenue:
    return PaperVenue(VenueRules(**rules))  # type: ignore[arg-type]


def held(v: PaperVenue, qty: str = "100", price: str = "100") -> None:
    """Give the execution a long position to protect."""
    v.submit(req("entry", side=Side.BUY, qty=qty), price=D(price), now=NOW)


def bracket(
    stop_type: OrderType = OrderType.STOP, *, entry_limit: str | None = None
) -> list[OrderRequest]:
    entry_type = OrderType.MARKET if entry_limit is None else OrderType.LIMIT
    return [
        req("entry", side=Side.BUY, order_type=entry_type, limit=entry_limit),
        req("tp", order_type=OrderType.LIMIT, limit="120", parent="entry", oco="g"),
        req(
            "sl",
            order_type=stop_type,
            stop="95",
            parent="entry",
            oco="g",
            limit="94" if stop_type is OrderType.STOP_LIMIT else None,
        ),
    ]


def test_a_sell_stop_rests_then_triggers_and_fills_at_the_gap_price() -> None:
    v = venue()
    held(v)
    stop, _ = v.submit(req("sl", order_type=OrderType.STOP, stop="95"), price=D(100), now=NOW)
    assert stop.status is OrderStatus.ACCEPTED
    assert not stop.triggered

    v.on_prices({"AAPL": D("95.01")}, now=NOW)
    assert stop.filled_quantity == 0
    v.on_prices({"AAPL": D(80)}, now=NOW)

    assert stop.status is OrderStatus.FILLED
    assert stop.triggered
    assert stop.stop_level == D(95)
    assert [f.price for f in stop.fills] == [D(80)]  # at the gap, not at the level
    kinds = [r.report_type for r in v.reports_after(0) if r.client_order_id == "sl"]
    assert kinds == [ReportType.ACCEPTED, ReportType.TRIGGERED, ReportType.FILL]


def test_a_stop_limit_triggers_into_a_limit_that_rests_when_the_gap_passes_it() -> None:
    v = venue()
    held(v)
    order, _ = v.submit(
        req("sl", order_type=OrderType.STOP_LIMIT, stop="95", limit="94"), price=D(100), now=NOW
    )

    v.on_prices({"AAPL": D(90)}, now=NOW)
    assert order.triggered
    assert order.filled_quantity == 0
    v.on_prices({"AAPL": D("94.5")}, now=NOW)

    assert order.status is OrderStatus.FILLED
    assert order.fills[0].price >= D(94)


def test_a_trailing_stop_ratchets_with_the_price_and_fires_on_the_way_back() -> None:
    v = venue()
    held(v)
    order, _ = v.submit(
        req("tr", order_type=OrderType.TRAILING_STOP, trail=Trail(pct=D("0.10"))),
        price=D(100),
        now=NOW,
    )
    assert order.stop_level == D("90.0000")
    for price in ("110", "105", "130", "118"):
        v.on_prices({"AAPL": D(price)}, now=NOW)
    assert (order.watermark, order.stop_level) == (D(130), D("117.0000"))
    assert order.filled_quantity == 0

    v.on_prices({"AAPL": D(117)}, now=NOW)

    assert order.status is OrderStatus.FILLED
    assert order.fills[0].price == D(117)


def test_a_trailing_stop_by_amount_from_a_reference_with_a_limit_offset() -> None:
    v = venue()
    held(v)
    trail = Trail(amount=D("2.5"), limit_offset=D("0.5"), reference_price=D(120))
    order, _ = v.submit(
        req("tr", order_type=OrderType.TRAILING_STOP, trail=trail), price=D(118), now=NOW
    )
    assert order.stop_level == D("117.5000")  # trails from the reference, 120

    v.on_prices({"AAPL": D(117)}, now=NOW)

    assert order.triggered
    assert order.working_limit == D("117.0000")
    assert order.fills[0].price == D(117)


def test_reduce_only_never_sells_beyond_the_position_and_cancels_the_rest() -> None:
    v = venue()
    held(v, qty="60")
    order, _ = v.submit(req("x", qty="100", reduce_only=True), price=D(100), now=NOW)

    assert order.filled_quantity == D(60)
    assert order.status is OrderStatus.CANCELLED
    assert order.reason == "REDUCE_ONLY"
    assert v.execution_book(EXEC).net("AAPL") == 0


def test_a_bracket_follows_the_partial_fills_of_its_entry_then_a_gap_fires_the_stop() -> None:
    v = venue(partial_fill_slices=4)
    results = v.submit_group(bracket(), prices={"AAPL": D(100)}, now=NOW)
    entry, tp, sl = (order for order, _ in results)
    assert entry.filled_quantity == D(25)
    assert (tp.active, sl.active) == (D(25), D(25))
    v.on_prices({"AAPL": D(100)}, now=NOW)
    assert (entry.filled_quantity, sl.active) == (D(50), D(50))
    v.cancel(entry, reason="user", now=NOW)  # the entry stops at 50 of 100

    v.on_prices({"AAPL": D(70)}, now=NOW)  # gap through the stop
    for _ in range(3):
        v.on_prices({"AAPL": D(70)}, now=NOW)

    assert sl.filled_quantity == D(50)
    assert {f.price for f in sl.fills} == {D(70)}
    assert sl.status is OrderStatus.CANCELLED
    assert sl.reason == "PARENT_DONE"
    assert tp.status is OrderStatus.CANCELLED
    assert tp.reason == "OCO"
    assert tp.filled_quantity == 0
    assert v.execution_book(EXEC).net("AAPL") == 0


def test_bracket_children_wait_for_the_entry_and_end_with_an_entry_that_filled_nothing() -> None:
    v = venue()
    results = v.submit_group(bracket(entry_limit="90"), prices={"AAPL": D(100)}, now=NOW)
    entry, tp, sl = (order for order, _ in results)
    v.on_prices({"AAPL": D(94)}, now=NOW)  # below the stop, but nothing is held yet
    assert not sl.triggered
    assert sl.filled_quantity == 0

    v.cancel(entry, reason="user", now=NOW)

    assert tp.status is OrderStatus.CANCELLED
    assert tp.reason == "PARENT_DONE"
    assert sl.status is OrderStatus.CANCELLED
    assert sl.reason == "PARENT_DONE"


def test_an_oco_fill_of_one_member_cancels_the_other() -> None:
    v = venue()
    held(v)
    tp, _ = v.submit(
        req("tp", order_type=OrderType.LIMIT, limit="120", oco="g"), price=D(100), now=NOW
    )
    sl, _ = v.submit(
        req("sl", order_type=OrderType.STOP, stop="95", oco="g"), price=D(100), now=NOW
    )

    v.on_prices({"AAPL": D(121)}, now=NOW)

    assert tp.status is OrderStatus.FILLED
    assert sl.status is OrderStatus.CANCELLED
    assert sl.reason == "OCO"
    assert sl.snapshot().active_quantity == 0


def test_a_group_is_accepted_all_or_nothing_and_is_idempotent() -> None:
    v = venue()
    bad = bracket()
    bad[2] = replace(bad[2], quantity=D(50))
    with pytest.raises(ValidationError, match="parent's quantity"):
        v.submit_group(bad, prices={"AAPL": D(100)}, now=NOW)
    assert v.order_log == []

    first = v.submit_group(bracket(), prices={"AAPL": D(100)}, now=NOW)
    again = v.submit_group(bracket(), prices={"AAPL": D(100)}, now=NOW)

    assert [dup for _, dup in first] == [False] * 3
    assert [dup for _, dup in again] == [True] * 3
    assert [o for o, _ in again] == [o for o, _ in first]
    with pytest.raises(ClientOrderIdReusedError):
        v.submit_group([bracket()[0], req("new")], prices={"AAPL": D(100)}, now=NOW)


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (req("a", order_type=OrderType.STOP), "stop_price"),
        (req("a", order_type=OrderType.STOP_LIMIT, stop="95"), "limit_price"),
        (req("a", order_type=OrderType.TRAILING_STOP), "needs a trail"),
        (req("a", order_type=OrderType.TRAILING_STOP, trail=Trail(pct=D(1))), "pct"),
        (req("a", order_type=OrderType.MARKET, stop="95"), "takes no stop_price"),
        (req("a", parent="nobody"), "unknown parent"),
    ],
)
def test_malformed_protective_orders_are_refused(order: OrderRequest, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        venue().submit(order, price=D(100), now=NOW)


def test_switched_off_types_and_groups_are_refused_and_not_advertised() -> None:
    v = venue(native_types=frozenset({OrderType.MARKET, OrderType.LIMIT}), contingent=False)

    with pytest.raises(ValidationError, match="not supported natively"):
        v.submit(req("a", order_type=OrderType.STOP, stop="95"), price=D(100), now=NOW)
    with pytest.raises(ValidationError, match="contingent"):
        v.submit(req("b", oco="g"), price=D(100), now=NOW)
    caps = v.rules.capabilities()
    assert caps.order_types == {OrderType.MARKET, OrderType.LIMIT}
    assert not caps.oco_groups
    assert not caps.brackets
    assert caps.reduce_only


prices = st.decimals(min_value=D(50), max_value=D(150), places=2)


@settings(max_examples=150, deadline=None)
@given(
    path=st.lists(prices, min_size=1, max_size=30),
    slices=st.integers(min_value=1, max_value=5),
    cancel_at=st.integers(min_value=0, max_value=30),
    stop_type=st.sampled_from([OrderType.STOP, OrderType.STOP_LIMIT]),
)
def test_an_oco_bracket_never_sells_more_than_its_entry_bought(
    path: list[Decimal], slices: int, cancel_at: int, stop_type: OrderType
) -> None:
    v = venue(partial_fill_slices=slices)
    results = v.submit_group(bracket(stop_type), prices={"AAPL": D(100)}, now=NOW)
    entry, tp, sl = (order for order, _ in results)
    for tick, price in enumerate(path):
        if tick == cancel_at:
            v.cancel(entry, reason="user", now=NOW)
        v.on_prices({"AAPL": price}, now=NOW)
        sold = tp.filled_quantity + sl.filled_quantity
        assert sold <= entry.filled_quantity
        assert v.execution_book(EXEC).net("AAPL") >= 0
    fill_ids = [f.fill_id for o in (entry, tp, sl) for f in o.fills]
    assert len(fill_ids) == len(set(fill_ids))
