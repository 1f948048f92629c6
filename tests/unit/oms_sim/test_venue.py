"""PaperVenue: fills, slippage, limits, partial fills, idempotency and books that match fills."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.orders import Fill, OrderStatus, OrderType, Side
from strategy_worker.errors import ValidationError
from strategy_worker.oms_sim.venue import (
    ClientOrderIdReusedError,
    OrderRequest,
    PaperVenue,
    ReportType,
    VenueRules,
    fills_of,
)

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
EXEC = uuid.UUID("00000000-0000-4000-8000-000000000001")


def request(
    cid: str = "c1",
    *,
    side: Side = Side.BUY,
    qty: str = "10",
    order_type: OrderType = OrderType.MARKET,
    limit: str | None = None,
    symbol: str = "AAPL",
    execution_id: uuid.UUID = EXEC,
    account: str = "acct-1",
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        execution_id=execution_id,
        account_id=account,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=Decimal(qty),
        limit_price=None if limit is None else Decimal(limit),
    )


def test_market_buy_fills_at_price_plus_slippage() -> None:
    venue = PaperVenue(VenueRules(slippage_bps=Decimal(10)))

    order, duplicate = venue.submit(request(), price=Decimal("100.00"), now=NOW)

    assert not duplicate
    assert order.status is OrderStatus.FILLED
    assert order.fills[0].price == Decimal("100.1000")
    assert order.filled_quantity == Decimal(10)


def test_market_sell_receives_price_minus_slippage() -> None:
    venue = PaperVenue(VenueRules(slippage_bps=Decimal(10)))

    order, _ = venue.submit(request(side=Side.SELL), price=Decimal("100.00"), now=NOW)

    assert order.avg_fill_price == Decimal("99.9000")


def test_fee_adds_bps_of_notional_and_per_share_exactly() -> None:
    venue = PaperVenue(VenueRules(fee_bps=Decimal(5), fee_per_share=Decimal("0.005")))

    order, _ = venue.submit(request(qty="10"), price=Decimal("100"), now=NOW)

    # 10 x 100 x 5 / 10000 = 0.5 ; 10 x 0.005 = 0.05
    assert order.fills[0].fee == Decimal("0.55")
    book = venue.account_book("acct-1")
    assert book.fees == Decimal("0.55")


def test_limit_buy_rests_until_price_crosses_then_fills_at_limit_or_better() -> None:
    venue = PaperVenue(VenueRules(slippage_bps=Decimal(0)))
    order, _ = venue.submit(
        request(order_type=OrderType.LIMIT, limit="99.50"), price=Decimal("100"), now=NOW
    )
    assert order.status is OrderStatus.ACCEPTED
    assert venue.working_symbols() == ["AAPL"]

    assert venue.on_prices({"AAPL": Decimal("99.60")}, now=NOW) == 0
    assert venue.on_prices({"AAPL": Decimal("99.40")}, now=NOW) == 1

    assert order.status is OrderStatus.FILLED
    assert order.avg_fill_price == Decimal("99.40")
    assert venue.working_symbols() == []


def test_limit_fill_never_worse_than_limit_despite_slippage() -> None:
    venue = PaperVenue(VenueRules(slippage_bps=Decimal(100)))

    order, _ = venue.submit(
        request(order_type=OrderType.LIMIT, limit="100"), price=Decimal("99.90"), now=NOW
    )

    assert order.avg_fill_price == Decimal("100")


def test_limit_sell_fills_when_price_rises_to_limit() -> None:
    venue = PaperVenue(VenueRules())
    order, _ = venue.submit(
        request(side=Side.SELL, order_type=OrderType.LIMIT, limit="105"),
        price=Decimal("100"),
        now=NOW,
    )

    venue.on_prices({"AAPL": Decimal("105.5")}, now=NOW)

    assert order.status is OrderStatus.FILLED
    assert order.avg_fill_price == Decimal("105.5000")


def test_partial_fills_one_slice_per_tick_add_up_to_quantity() -> None:
    venue = PaperVenue(VenueRules(partial_fill_slices=3))
    order, _ = venue.submit(request(qty="10"), price=Decimal("50"), now=NOW)
    assert order.status is OrderStatus.PARTIALLY_FILLED

    venue.on_prices({"AAPL": Decimal("51")}, now=NOW)
    venue.on_prices({"AAPL": Decimal("52")}, now=NOW)

    assert order.status is OrderStatus.FILLED
    assert [f.quantity for f in order.fills] == [Decimal(3), Decimal(3), Decimal(4)]
    assert sum(f.quantity for f in order.fills) == order.request.quantity
    notional = sum(f.quantity * f.price for f in order.fills)
    assert order.filled_notional == notional


def test_resubmission_returns_the_existing_order_and_logs_it_once() -> None:
    venue = PaperVenue(VenueRules())
    first, _ = venue.submit(request(), price=Decimal("10"), now=NOW)

    again, duplicate = venue.submit(request(), price=Decimal("11"), now=NOW)

    assert duplicate
    assert again is first
    assert venue.order_log == ["c1"]
    assert len(first.fills) == 1


def test_reusing_a_client_order_id_for_another_order_is_refused() -> None:
    venue = PaperVenue(VenueRules())
    venue.submit(request(qty="10"), price=Decimal("10"), now=NOW)

    with pytest.raises(ClientOrderIdReusedError):
        venue.submit(request(qty="11"), price=Decimal("10"), now=NOW)
    assert venue.order_log == ["c1"]


def test_order_without_a_price_is_rejected_with_reason() -> None:
    venue = PaperVenue(VenueRules())

    order, _ = venue.submit(request(), price=None, now=NOW)

    assert order.status is OrderStatus.REJECTED
    assert order.reason == "NO_PRICE"
    assert venue.reports_after(0)[-1].report_type is ReportType.REJECTED


@pytest.mark.parametrize(
    ("qty", "order_type", "limit"),
    [("0", OrderType.MARKET, None), ("-1", OrderType.MARKET, None), ("1", OrderType.LIMIT, None)],
)
def test_invalid_order_is_refused_and_not_logged(
    qty: str, order_type: OrderType, limit: str | None
) -> None:
    venue = PaperVenue(VenueRules())

    with pytest.raises(ValidationError):
        venue.submit(request(qty=qty, order_type=order_type, limit=limit), price=None, now=NOW)
    assert venue.order_log == []


def test_rejection_rate_is_reproducible_for_a_seed() -> None:
    def statuses(seed: int) -> list[OrderStatus]:
        venue = PaperVenue(VenueRules(rejection_rate=0.5), seed=seed)
        return [
            venue.submit(request(f"c{i}"), price=Decimal("10"), now=NOW)[0].status
            for i in range(40)
        ]

    first = statuses(3)
    assert first == statuses(3)
    assert OrderStatus.REJECTED in first
    assert OrderStatus.FILLED in first


def test_cancel_stops_the_rest_of_a_partially_filled_order() -> None:
    venue = PaperVenue(VenueRules(partial_fill_slices=2))
    order, _ = venue.submit(request(qty="10"), price=Decimal("10"), now=NOW)

    venue.cancel(order, reason="user", now=NOW)
    venue.on_prices({"AAPL": Decimal("10")}, now=NOW)

    assert order.status is OrderStatus.CANCELLED
    assert order.filled_quantity == Decimal(5)
    assert venue.cancel(order, reason="again", now=NOW).status is OrderStatus.CANCELLED
    assert [r.report_type for r in venue.reports_after(0)] == [
        ReportType.ACCEPTED,
        ReportType.FILL,
        ReportType.CANCELLED,
    ]


def test_report_sequence_is_global_and_gap_free() -> None:
    venue = PaperVenue(VenueRules(partial_fill_slices=2))
    venue.submit(request("a"), price=Decimal("10"), now=NOW)
    venue.submit(request("b", symbol="MSFT"), price=Decimal("20"), now=NOW)
    venue.on_prices({"AAPL": Decimal("10"), "MSFT": Decimal("20")}, now=NOW)

    seqs = [r.seq for r in venue.reports_after(0)]

    assert seqs == list(range(1, venue.last_seq + 1))
    assert [r.seq for r in venue.reports_after(3)] == seqs[3:]


def _expected(fills: list[Fill], cash: Decimal) -> tuple[dict[str, Decimal], Decimal, Decimal]:
    """Net positions, cash and fees summed straight from the fills (independent arithmetic)."""
    net: dict[str, Decimal] = {}
    for fill in fills:
        sign = 1 if fill.side is Side.BUY else -1
        net[fill.symbol] = net.get(fill.symbol, Decimal(0)) + sign * fill.quantity
        cash -= sign * fill.quantity * fill.price + fill.fee
    return net, cash, sum((f.fee for f in fills), Decimal(0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["AAPL", "MSFT"]),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(min_value=1, max_value=500),
            st.sampled_from(["acct-1", "acct-2"]),
            st.decimals(min_value=Decimal("1"), max_value=Decimal("500"), places=2),
        ),
        max_size=25,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_positions_and_cash_always_agree_with_the_fills(
    orders: list[tuple[str, Side, int, str, Decimal]], slices: int
) -> None:
    venue = PaperVenue(
        VenueRules(
            partial_fill_slices=slices,
            slippage_bps=Decimal(7),
            fee_bps=Decimal(3),
            initial_cash=Decimal(100_000),
        )
    )
    executions = [uuid.UUID(int=1), uuid.UUID(int=2)]
    for i, (symbol, side, qty, account, price) in enumerate(orders):
        venue.submit(
            request(
                f"c{i}",
                symbol=symbol,
                side=side,
                qty=str(qty),
                account=account,
                execution_id=executions[i % 2],
            ),
            price=price,
            now=NOW,
        )
        venue.on_prices({symbol: price + 1}, now=NOW)

    for account in ("acct-1", "acct-2"):
        mine = [o for o in venue.orders() if o.request.account_id == account]
        net, cash, fees = _expected(fills_of(mine), Decimal(100_000))
        book = venue.account_book(account)
        assert (book.net_positions(), book.cash, book.fees) == (net, cash, fees)
    for execution_id in executions:
        net, cash, fees = _expected(fills_of(venue.orders(execution_id=execution_id)), Decimal(0))
        book = venue.execution_book(execution_id)
        assert (book.net_positions(), book.cash, book.fees) == (net, cash, fees)
    assert len(venue.order_log) == len(set(venue.order_log)) == len(orders)
