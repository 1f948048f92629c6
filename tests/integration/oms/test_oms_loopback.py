"""The OMS client against the real paper OMS over loopback gRPC (no mocks)."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest

from strategy_worker.adapters.oms_grpc import BreakerState, OmsCallError, OmsGrpcClient
from strategy_worker.domain.orders import ExecutionReport, OrderStatus, OrderType, Side
from strategy_worker.errors import CircuitOpenError
from strategy_worker.oms_sim import OmsSimServer

from .conftest import ACCOUNT, ClientFactory, ServerFactory, make_intent, metric

pytestmark = pytest.mark.integration


async def test_market_order_is_submitted_and_filled_with_slippage(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    execution_id = uuid.uuid4()

    order = await client.submit(make_intent(1, execution_id=execution_id), account_id=ACCOUNT)

    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == Decimal(10)
    assert order.avg_fill_price == Decimal("100.0500")  # 100 + 5 bps: buys pay up
    assert order.account_id == ACCOUNT
    assert await client.get_order(order.client_order_id) == order
    assert await client.list_orders(execution_id) == [order]
    assert await client.get_positions(execution_id) == {"AAPL": Decimal(10)}
    assert await client.ping()


async def test_duplicate_submission_returns_the_same_order_and_the_oms_logs_one(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    intent = make_intent(1, execution_id=uuid.uuid4())

    first = await client.submit(intent, account_id=ACCOUNT)
    second = await client.submit(intent, account_id=ACCOUNT)
    [third] = await client.submit_many([intent], account_id=ACCOUNT)

    assert first == second == third
    assert server.venue.order_log.count(intent.client_order_id) == 1
    assert len(server.venue.order_log) == 1


async def test_reusing_a_client_order_id_for_another_order_is_refused_not_retried(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    execution_id = uuid.uuid4()
    await client.submit(make_intent(1, execution_id=execution_id), account_id=ACCOUNT)

    with pytest.raises(OmsCallError) as info:
        await client.submit(
            make_intent(1, execution_id=execution_id, quantity="11"), account_id=ACCOUNT
        )

    assert info.value.code == "ALREADY_EXISTS"
    assert not info.value.retryable
    assert (
        metric(client, "oms_client_calls_total", method="SubmitOrder", code="ALREADY_EXISTS") == 1
    )


async def test_partial_fills_add_up_to_the_order_quantity(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(partial_fill_slices=4)
    client = make_client(server.port)
    execution_id = uuid.uuid4()

    order = await client.submit(
        make_intent(1, execution_id=execution_id, quantity="10"), account_id=ACCOUNT
    )
    assert order.status is OrderStatus.PARTIALLY_FILLED
    for _ in range(3):
        await server.tick()
    final = await client.get_order(order.client_order_id)

    assert final is not None
    assert final.status is OrderStatus.FILLED
    assert [f.quantity for f in final.fills] == [Decimal(2), Decimal(2), Decimal(2), Decimal(4)]
    assert sum(f.quantity for f in final.fills) == final.filled_quantity == Decimal(10)
    assert len({f.fill_id for f in final.fills}) == 4


async def test_resting_limit_order_fills_when_price_crosses_or_can_be_cancelled(
    server: OmsSimServer, client: OmsGrpcClient, prices: object
) -> None:
    execution_id = uuid.uuid4()
    resting = await client.submit(
        make_intent(1, execution_id=execution_id, order_type=OrderType.LIMIT, limit_price="95"),
        account_id=ACCOUNT,
    )
    other = await client.submit(
        make_intent(2, execution_id=execution_id, order_type=OrderType.LIMIT, limit_price="90"),
        account_id=ACCOUNT,
    )
    assert resting.status is OrderStatus.ACCEPTED

    prices.set_price("AAPL", Decimal("94"))  # type: ignore[attr-defined]
    await server.tick()
    cancelled = await client.cancel(other.client_order_id)

    filled = await client.get_order(resting.client_order_id)
    assert filled is not None
    assert filled.status is OrderStatus.FILLED
    assert filled.avg_fill_price <= Decimal("95")
    assert cancelled.status is OrderStatus.CANCELLED
    assert await client.get_order("sw-never-sent") is None


async def test_stalled_server_hits_the_deadline_and_the_retry_gets_the_same_order(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    intent = make_intent(1, execution_id=uuid.uuid4())
    # The OMS accepts the order, then holds its answer past the client's deadline.
    server.faults.stall(seconds=5, calls=1, after_processing=True)

    order = await client.submit(intent, account_id=ACCOUNT)

    assert order.client_order_id == intent.client_order_id
    assert order.status is OrderStatus.FILLED
    assert server.venue.order_log == [intent.client_order_id]
    assert (
        metric(client, "oms_client_calls_total", method="SubmitOrder", code="DEADLINE_EXCEEDED")
        == 1
    )
    assert (
        metric(client, "oms_client_retries_total", method="SubmitOrder", code="DEADLINE_EXCEEDED")
        == 1
    )
    server.faults.clear_stall()


async def test_call_stalled_before_processing_then_released_never_duplicates(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    intent = make_intent(1, execution_id=uuid.uuid4())
    server.faults.stall(seconds=None, calls=1)  # held until cleared, before any work

    order = await client.submit(intent, account_id=ACCOUNT)
    server.faults.clear_stall()
    await asyncio.sleep(0.05)  # let the held call run on, if it still lives

    assert order.status is OrderStatus.FILLED
    assert server.venue.order_log == [intent.client_order_id]
    assert len(server.venue.reports_after(0)) == 2  # one ACCEPTED, one FILL


async def test_server_down_bounded_retries_open_the_breaker_and_recovery_closes_it(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    execution_id = uuid.uuid4()
    await client.submit(make_intent(1, execution_id=execution_id), account_id=ACCOUNT)
    await server.stop(grace=None)

    started = time.monotonic()
    with pytest.raises(OmsCallError) as info:
        await client.submit(make_intent(2, execution_id=execution_id), account_id=ACCOUNT)
    assert info.value.code == "UNAVAILABLE"
    assert info.value.retryable
    assert time.monotonic() - started < 2.0
    assert metric(client, "oms_client_calls_total", method="SubmitOrder", code="UNAVAILABLE") == 3
    assert client.breaker.state is BreakerState.OPEN

    with pytest.raises(CircuitOpenError):
        await client.submit(make_intent(2, execution_id=execution_id), account_id=ACCOUNT)
    assert metric(client, "oms_client_calls_total", method="SubmitOrder", code="UNAVAILABLE") == 3

    await server.start()  # same port, same venue
    await asyncio.sleep(0.35)  # past reset_timeout_s: the next call is the probe
    order = await client.submit(make_intent(2, execution_id=execution_id), account_id=ACCOUNT)

    assert order.status is OrderStatus.FILLED
    assert client.breaker.state is BreakerState.CLOSED
    assert metric(client, "oms_client_breaker_state") == 0
    assert len(server.venue.order_log) == 2


async def _collect(
    client: OmsGrpcClient, from_seq: int, until_seq: int, limit_s: float = 5.0
) -> list[ExecutionReport]:
    seen: list[ExecutionReport] = []

    async def run() -> None:
        async for report in client.reports(from_seq=from_seq):
            seen.append(report)
            if report.seq >= until_seq:
                return

    await asyncio.wait_for(run(), limit_s)
    return seen


async def test_report_stream_resumes_from_a_sequence_number_without_loss_or_duplicates(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    execution_id = uuid.uuid4()
    for seq in range(1, 6):
        await client.submit(make_intent(seq, execution_id=execution_id), account_id=ACCOUNT)
    assert server.venue.last_seq == 10

    head = await _collect(client, from_seq=0, until_seq=4)
    rest = await _collect(client, from_seq=head[-1].seq, until_seq=10)

    assert [r.seq for r in head] == [1, 2, 3, 4]
    assert [r.seq for r in rest] == list(range(5, 11))
    assert [r.fill is not None for r in rest[:2]] == [False, True]


async def test_report_stream_survives_dropped_streams_and_a_restart_without_loss(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    execution_id = uuid.uuid4()
    seen: list[int] = []
    progressed = asyncio.Event()

    async def consume() -> None:
        async for report in client.reports(from_seq=0):
            seen.append(report.seq)
            progressed.set()
            if report.seq >= 40:
                return

    async def caught_up() -> None:
        # Faults hit a live, attached stream (not one already waiting to reconnect).
        while not seen or seen[-1] < server.venue.last_seq:
            progressed.clear()
            await progressed.wait()

    consumer = asyncio.create_task(consume())
    for seq in range(1, 21):
        await client.submit(make_intent(seq, execution_id=execution_id), account_id=ACCOUNT)
        if seq == 5:
            await asyncio.wait_for(caught_up(), 5)
            server.faults.drop_streams()
        if seq == 12:
            await asyncio.wait_for(caught_up(), 5)
            await server.stop(grace=None)
            await server.start()
    await asyncio.wait_for(consumer, 10)

    assert seen == list(range(1, 41))
    assert metric(client, "oms_client_stream_reconnects_total") >= 2


async def test_batch_submission_over_the_bidirectional_stream_is_idempotent(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    execution_id = uuid.uuid4()
    intents = [
        make_intent(i, execution_id=execution_id, side=Side.BUY if i % 2 else Side.SELL)
        for i in range(1, 51)
    ]

    first = await client.submit_many(intents, account_id=ACCOUNT)
    again = await client.submit_many(intents, account_id=ACCOUNT)

    assert [o.client_order_id for o in first] == [i.client_order_id for i in intents]
    assert all(o.status is OrderStatus.FILLED for o in first)
    assert [o.oms_order_id for o in again] == [o.oms_order_id for o in first]
    assert len(server.venue.order_log) == len(set(server.venue.order_log)) == 50


async def test_oms_positions_and_cash_agree_with_its_fills(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(fee_bps="2", fee_per_share="0.01", initial_cash="50000")
    client = make_client(server.port)
    execution_id = uuid.uuid4()
    sides = [Side.BUY, Side.BUY, Side.SELL, Side.BUY, Side.SELL]
    for seq, side in enumerate(sides, start=1):
        symbol = "AAPL" if seq % 2 else "MSFT"
        await client.submit(
            make_intent(seq, execution_id=execution_id, side=side, symbol=symbol, quantity="7"),
            account_id=ACCOUNT,
        )

    orders = await client.list_orders(execution_id)
    book = await client.get_position_book(account_id=ACCOUNT)

    fills = [f for o in orders for f in o.fills]
    net: dict[str, Decimal] = {}
    cash = Decimal(50000)
    for f in fills:
        sign = 1 if f.side is Side.BUY else -1
        net[f.symbol] = net.get(f.symbol, Decimal(0)) + sign * f.quantity
        cash -= sign * f.quantity * f.price + f.fee
    assert {p.symbol: Decimal(p.quantity) for p in book.positions} == net
    assert Decimal(book.cash) == cash
    assert Decimal(book.fees) == sum((f.fee for f in fills), Decimal(0)) > 0
    assert await client.get_positions(execution_id) == net


async def test_background_ticker_fills_a_resting_limit_when_the_price_crosses(
    make_server: ServerFactory, make_client: ClientFactory, prices: object
) -> None:
    server = await make_server(tick_interval_s=0.01)
    client = make_client(server.port)
    order = await client.submit(
        make_intent(1, execution_id=uuid.uuid4(), order_type=OrderType.LIMIT, limit_price="99"),
        account_id=ACCOUNT,
    )
    assert order.status is OrderStatus.ACCEPTED

    prices.set_price("AAPL", Decimal("98.5"))  # type: ignore[attr-defined]
    received: list[ExecutionReport] = []
    async for report in client.reports(from_seq=1):
        received.append(report)
        break

    [report] = received
    assert report.status is OrderStatus.FILLED
    assert report.fill is not None
    # 98.5 + 5 bps = 98.54925, half-even to 98.5492: slipped, still under the limit.
    assert report.fill.price == Decimal("98.5492")


async def test_refusing_server_answers_unavailable_and_ping_says_not_ready(
    server: OmsSimServer, client: OmsGrpcClient
) -> None:
    server.faults.refuse()

    assert not await client.ping()
    with pytest.raises(OmsCallError) as info:
        await client.list_orders(uuid.uuid4())
    assert info.value.code == "UNAVAILABLE"

    server.faults.refuse(False)
    assert await client.ping()
