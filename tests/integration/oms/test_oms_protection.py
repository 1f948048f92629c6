"""Contract 1.1 over loopback gRPC: the paper OMS and the client, then the protection book
driving them in both modes (native at the OMS, emulated by the worker)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from strategy_worker.adapters.oms_grpc import OmsCallError, OmsGrpcClient
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import (
    ExecutionReport,
    OmsCapabilities,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.protection import ProtectionBook, ProtectionSpec
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.oms_sim import ManualPrices, OmsSimServer
from strategy_worker.proto.aipx.oms.v1 import oms_pb2_grpc as pb_grpc

from .conftest import ACCOUNT, ClientFactory, ServerFactory

pytestmark = pytest.mark.integration

D = Decimal
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def order(
    execution_id: uuid.UUID,
    seq: int,
    *,
    side: Side = Side.SELL,
    order_type: OrderType = OrderType.MARKET,
    quantity: str = "100",
    purpose: OrderPurpose = OrderPurpose.STOP_LOSS,
    **fields: Any,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=f"sw-{execution_id.hex}-{seq:06d}",
        execution_id=execution_id,
        intent_seq=seq,
        symbol="AAPL",
        side=side,
        order_type=order_type,
        quantity=D(quantity),
        price=D(100),
        purpose=purpose,
        **fields,
    )


async def reports_until(client: OmsGrpcClient, last_seq: int) -> list[ExecutionReport]:
    seen: list[ExecutionReport] = []

    async def run() -> None:
        async for report in client.reports(from_seq=0):
            seen.append(report)
            if report.seq >= last_seq:
                return

    await asyncio.wait_for(run(), 5)
    return seen


async def test_capabilities_say_what_the_paper_oms_holds_natively_in_each_mode(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    native = make_client((await make_server()).port)
    emulating = make_client((await make_server(native_protection=False)).port)
    partial = make_client((await make_server(unsupported_order_types=["TRAILING_STOP"])).port)

    full = await native.capabilities()
    bare = await emulating.capabilities()
    some = await partial.capabilities()

    assert full.order_types == frozenset(OrderType)
    assert (full.oco_groups, full.brackets, full.reduce_only, full.order_groups) == (
        True,
        True,
        True,
        True,
    )
    assert full.contract_version == "1.2"
    assert bare.order_types == {OrderType.MARKET, OrderType.LIMIT}
    assert not bare.oco_groups
    assert not bare.brackets
    assert bare.reduce_only
    assert OrderType.TRAILING_STOP not in some.order_types
    assert OrderType.STOP in some.order_types


async def test_unsupported_types_are_refused_without_retries(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(native_protection=False)
    client = make_client(server.port)
    stop = order(uuid.uuid4(), 1, order_type=OrderType.STOP, stop_price=D(95))

    with pytest.raises(OmsCallError) as info:
        await client.submit(stop, account_id=ACCOUNT)

    assert info.value.code == "INVALID_ARGUMENT"
    assert not info.value.retryable
    assert "GetCapabilities" in str(info.value)
    assert server.venue.order_log == []


class _OneDotZero(pb_grpc.OrderManagementServiceServicer):
    """An OMS of contract 1.0: it has never heard of GetCapabilities."""


async def test_a_1_0_oms_without_get_capabilities_means_the_baseline(
    make_client: ClientFactory,
) -> None:
    server = grpc.aio.server()
    pb_grpc.add_OrderManagementServiceServicer_to_server(_OneDotZero(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        caps = await make_client(port).capabilities()
    finally:
        await server.stop(None)

    assert caps == OmsCapabilities.baseline()


async def test_a_native_bracket_follows_a_partial_entry_then_a_gap_fires_its_stop(
    make_server: ServerFactory, make_client: ClientFactory, prices: ManualPrices
) -> None:
    server = await make_server(partial_fill_slices=4, slippage_bps=0)
    client = make_client(server.port)
    ex = uuid.uuid4()
    entry = order(ex, 1, side=Side.BUY, purpose=OrderPurpose.INITIAL)
    take = order(
        ex,
        2,
        order_type=OrderType.LIMIT,
        limit_price=D(120),
        purpose=OrderPurpose.TAKE_PROFIT,
        parent_client_order_id=entry.client_order_id,
        oco_group_id="bracket-1",
        reduce_only=True,
    )
    stop = order(
        ex,
        3,
        order_type=OrderType.STOP,
        stop_price=D(95),
        parent_client_order_id=entry.client_order_id,
        oco_group_id="bracket-1",
        reduce_only=True,
    )

    placed = await client.submit_group([entry, take, stop], account_id=ACCOUNT)
    again = await client.submit_group([entry, take, stop], account_id=ACCOUNT)
    assert [o.client_order_id for o in again] == [o.client_order_id for o in placed]
    assert len(server.venue.order_log) == 3
    await server.tick()  # entry 50 of 100
    await client.cancel(entry.client_order_id)
    children = await client.get_order(stop.client_order_id)
    assert children is not None
    assert children.active_quantity == D(50)
    prices.set_price("AAPL", D(70))  # gap from 100 through the stop at 95
    for _ in range(3):
        await server.tick()

    sl = await client.get_order(stop.client_order_id)
    tp = await client.get_order(take.client_order_id)
    assert sl is not None
    assert tp is not None
    assert sl.triggered
    assert sl.filled_quantity == D(50)
    assert {f.price for f in sl.fills} == {D(70)}  # the gap price, not the level
    assert (sl.status, sl.reason) == (OrderStatus.CANCELLED, "PARENT_DONE")
    assert (tp.status, tp.reason, tp.filled_quantity) == (OrderStatus.CANCELLED, "OCO", ZERO)
    assert await client.get_positions(ex) == {"AAPL": ZERO}
    reports = await reports_until(client, server.venue.last_seq)
    triggered = [r for r in reports if r.client_order_id == stop.client_order_id and r.triggered]
    assert triggered[0].stop_price == D(95)
    fill_ids = [r.fill.fill_id for r in reports if r.fill is not None]
    assert len(fill_ids) == len(set(fill_ids))


async def test_a_native_trailing_stop_ratchets_up_and_fires_on_the_way_down(
    make_server: ServerFactory, make_client: ClientFactory, prices: ManualPrices
) -> None:
    server = await make_server(slippage_bps=0)
    client = make_client(server.port)
    ex = uuid.uuid4()
    await client.submit(order(ex, 1, side=Side.BUY, quantity="10"), account_id=ACCOUNT)
    trail = order(
        ex,
        2,
        quantity="10",
        order_type=OrderType.TRAILING_STOP,
        purpose=OrderPurpose.TRAILING_STOP,
        trail=Trail(pct=D("0.10")),
        reduce_only=True,
    )
    await client.submit(trail, account_id=ACCOUNT)

    for mark in ("110", "104", "130"):
        prices.set_price("AAPL", D(mark))
        await server.tick()
    resting = await client.get_order(trail.client_order_id)
    prices.set_price("AAPL", D(116))
    await server.tick()
    fired = await client.get_order(trail.client_order_id)

    assert resting is not None
    assert fired is not None
    assert (resting.watermark, resting.stop_price) == (D(130), D("117.0000"))
    assert resting.status is OrderStatus.ACCEPTED
    assert fired.status is OrderStatus.FILLED
    assert fired.fills[0].price == D(116)
    assert await client.get_positions(ex) == {"AAPL": ZERO}


# --------------------------------------------- the book driving the OMS, as the runtime will


class Driver:
    """The runtime's protection calls in miniature: reconcile, tell, decide, send."""

    def __init__(self, client: OmsGrpcClient, server: OmsSimServer, book: ProtectionBook) -> None:
        self.client = client
        self.server = server
        self.book = book
        self.execution_id = book.execution_id
        self.next_seq = 100
        self.now = T0
        self.exits: list[str] = []
        self.natives: list[str] = []

    async def step(self, prices: ManualPrices, mark: str) -> None:
        self.now += timedelta(seconds=1)
        prices.set_price("AAPL", D(mark))
        await self.server.tick()
        portfolio = Portfolio(D(10_000_000))
        buying = ZERO
        for known in await self.client.list_orders(self.execution_id):
            for fill in known.fills:
                portfolio.apply_fill(fill)
            self.book.on_oms_order(known, at=self.now)
            if known.side is Side.BUY and not known.status.is_terminal:
                buying += known.quantity - known.filled_quantity
        held = portfolio.positions.get("AAPL")
        if held is None:
            self.book.on_position("AAPL", ZERO, ZERO)
        else:
            self.book.on_position("AAPL", held.quantity, held.cost_basis, buying=buying)
        self.book.on_price("AAPL", D(mark), self.now)
        step = self.book.decide(at=self.now, next_seq=self.next_seq)
        self.next_seq += len(step.intents)
        for cid in step.cancels:
            await self.client.cancel(cid)
        natives = [i for i in step.intents if self.book.is_resting_leg(i.client_order_id)]
        if natives:
            await self.client.submit_group(natives, account_id=ACCOUNT)
            self.natives += [i.client_order_id for i in natives]
        for intent in step.intents:
            if intent not in natives:
                await self.client.submit(intent, account_id=ACCOUNT)
                self.exits.append(intent.client_order_id)


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
async def test_the_book_exits_a_ratcheted_trailing_stop_once_in_both_modes(
    native: bool,
    make_server: ServerFactory,
    make_client: ClientFactory,
    prices: ManualPrices,
) -> None:
    server = await make_server(native_protection=native, slippage_bps=0)
    client = make_client(server.port)
    ex = uuid.uuid4()
    await client.submit(order(ex, 1, side=Side.BUY, quantity="10"), account_id=ACCOUNT)
    spec = ProtectionSpec(
        stop_loss_pct=D("0.05"),
        trailing_stop_pct=D("0.10"),
        take_profit_pct=D("0.50"),
        placement=ProtectionPlacement.AUTO,
    )
    driver = Driver(
        client, server, ProtectionBook(ex, spec, capabilities=await client.capabilities())
    )

    for mark in ("100", "112", "108", "125", "118", "112", "111"):
        await driver.step(prices, mark)

    orders = {o.client_order_id: o for o in await client.list_orders(ex)}
    protective = [o for o in orders.values() if o.client_order_id != order(ex, 1).client_order_id]
    sold = [o for o in protective if o.filled_quantity > 0]
    assert await client.get_positions(ex) == {"AAPL": ZERO}
    assert len(sold) == 1  # exactly one exit
    assert sold[0].filled_quantity == D(10)
    assert sold[0].fills[0].price == D(112)  # 125 x 0.9 = 112.5 reached at 112
    if native:
        assert driver.exits == []
        assert sold[0].order_type is OrderType.TRAILING_STOP
        assert {o.status for o in protective} == {OrderStatus.FILLED, OrderStatus.CANCELLED}
    else:
        assert driver.natives == []
        assert len(driver.exits) == 1
        assert (sold[0].order_type, sold[0].reduce_only) == (OrderType.MARKET, True)
    assert driver.book.symbols == []  # flat: the book forgot the symbol


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
async def test_the_book_exits_a_partly_filled_entry_once_after_a_gap_through_its_stop(
    native: bool,
    make_server: ServerFactory,
    make_client: ClientFactory,
    prices: ManualPrices,
) -> None:
    server = await make_server(native_protection=native, slippage_bps=0, partial_fill_slices=4)
    client = make_client(server.port)
    ex = uuid.uuid4()
    entry = order(ex, 1, side=Side.BUY, purpose=OrderPurpose.INITIAL)
    await client.submit(entry, account_id=ACCOUNT)  # 25 of 100 at once
    spec = ProtectionSpec(
        stop_loss_pct=D("0.05"), take_profit_pct=D("0.20"), placement=ProtectionPlacement.AUTO
    )
    book = ProtectionBook(ex, spec, capabilities=await client.capabilities())
    driver = Driver(client, server, book)

    await driver.step(prices, "100")  # 50 of 100; nothing rests natively while it fills
    assert driver.natives == []
    await client.cancel(entry.client_order_id)  # the entry ends at 50
    await driver.step(prices, "100")  # settled: native legs rest now (in native mode)
    for mark in ("70", "70", "70", "69"):  # a gap from 100 through 95
        await driver.step(prices, mark)

    orders = [o for o in await client.list_orders(ex) if o.client_order_id != entry.client_order_id]
    sold = [o for o in orders if o.filled_quantity > 0]
    assert await client.get_positions(ex) == {"AAPL": ZERO}
    assert len(sold) == 1
    assert sold[0].filled_quantity == D(50)
    assert sold[0].fills[0].price == D(70)  # in slices, from the gap price on, never at 95
    assert max(f.price for f in sold[0].fills) <= D(70)
    if native:
        assert len(driver.natives) == 2
        assert driver.exits == []
    else:
        assert driver.natives == []
        assert len(driver.exits) == 1
