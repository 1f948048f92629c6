"""Contract 1.2 against the real paper OMS over loopback gRPC: order batches on one shared
stream, the per-order path of an OMS without them, flow control, batched report streams."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.orders import ExecutionReport, OrderStatus
from strategy_worker.oms_sim import OmsSimServer
from strategy_worker.ports import SubmitEntry
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb

from .conftest import ACCOUNT, ClientFactory, ServerFactory, make_intent, metric

pytestmark = pytest.mark.integration


def _entries(n: int, *, executions: int = 1) -> list[SubmitEntry]:
    ids = [uuid.uuid4() for _ in range(executions)]
    return [
        SubmitEntry((make_intent(i + 1, execution_id=ids[i % executions]),), f"acct-{i % 3}")
        for i in range(n)
    ]


async def test_capabilities_announce_batches_and_their_window(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    batched = make_client((await make_server(max_batch_orders=50, max_batches_in_flight=3)).port)
    plain = make_client((await make_server(order_batches=False, report_batches=False)).port)

    caps = await batched.capabilities()
    old = await plain.capabilities()

    assert (caps.order_batches, caps.max_batch_orders, caps.max_batches_in_flight) == (
        True,
        50,
        3,
    )
    assert caps.report_batches
    assert caps.contract_version == "1.2"
    assert (old.order_batches, old.max_batch_orders, old.report_batches) == (False, 0, False)
    assert old.contract_version == "1.1"


async def test_a_batch_of_many_executions_is_one_request_on_one_stream(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(max_batch_orders=40)
    client = make_client(server.port)
    entries = _entries(100, executions=7)

    outcomes = await client.submit_batch(entries)
    again = await client.submit_batch(entries[:10])

    assert [o.orders[0].client_order_id for o in outcomes] == [
        e.intents[0].client_order_id for e in entries
    ]
    assert all(o.error is None and o.orders[0].status is OrderStatus.FILLED for o in outcomes)
    assert [o.orders[0].account_id for o in outcomes[:3]] == ["acct-0", "acct-1", "acct-2"]
    assert again == outcomes[:10]  # idempotent: the orders held, unchanged
    assert len(server.venue.order_log) == 100
    # 100 orders in batches of at most 40 (3), then 1: four requests, one stream.
    assert metric(client, "oms_client_calls_total", method="SubmitOrders", code="OK") == 4
    assert client.submit_streams_opened == 1


async def test_a_refused_entry_does_not_refuse_the_rest_of_its_batch(
    server: OmsSimServer, make_client: ClientFactory
) -> None:
    client = make_client(server.port)
    execution_id = uuid.uuid4()
    await client.submit(make_intent(1, execution_id=execution_id), account_id=ACCOUNT)
    reused = make_intent(1, execution_id=execution_id, quantity="11")
    fresh = make_intent(2, execution_id=execution_id)

    outcomes = await client.submit_batch(
        [SubmitEntry((reused,), ACCOUNT), SubmitEntry((fresh,), ACCOUNT)]
    )

    assert outcomes[0].error is not None
    assert getattr(outcomes[0].error, "code", "") == ("ALREADY_EXISTS")
    assert not outcomes[0].error.retryable
    assert outcomes[1].error is None
    assert outcomes[1].orders[0].client_order_id == (fresh.client_order_id)


async def test_groups_travel_in_a_batch_next_to_single_orders(
    server: OmsSimServer, make_client: ClientFactory
) -> None:
    client = make_client(server.port)
    execution_id = uuid.uuid4()
    one = make_intent(1, execution_id=execution_id)
    pair = (make_intent(2, execution_id=execution_id), make_intent(3, execution_id=execution_id))

    outcomes = await client.submit_batch(
        [SubmitEntry((one,), ACCOUNT), SubmitEntry(pair, ACCOUNT, group=True)]
    )

    assert [len(o.orders) for o in outcomes] == [1, 2]
    assert [o.client_order_id for o in outcomes[1].orders] == [i.client_order_id for i in pair]


async def test_an_oms_without_batches_gets_one_request_per_order_on_the_shared_stream(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(order_batches=False)
    client = make_client(server.port)
    entries = _entries(30, executions=3)

    outcomes = await client.submit_batch(entries)

    assert all(o.error is None for o in outcomes)
    assert len(server.venue.order_log) == 30
    assert client.submit_streams_opened == 1


async def test_an_oms_that_stopped_taking_batches_is_asked_again_and_served_per_order(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server()
    client = make_client(server.port)
    await client.submit_batch(_entries(2))  # learns: batches
    server.service._batch_limits = None  # the same address now answers as a 1.1 OMS

    outcomes = await client.submit_batch(_entries(5))

    assert all(o.error is None for o in outcomes)
    assert len(server.venue.order_log) == 7


async def test_a_dropped_stream_is_reopened_and_the_unanswered_batch_resent_idempotently(
    server: OmsSimServer, make_client: ClientFactory
) -> None:
    client = make_client(server.port, timeout=2.0)
    entries = _entries(20)
    await client.submit_batch(entries[:1])
    server.faults.stall(after_processing=True, calls=1)  # processed, answer held back
    sending = asyncio.create_task(client.submit_batch(entries))
    await asyncio.sleep(0.2)

    server.faults.drop_submit_streams()
    outcomes = await sending

    assert all(o.error is None for o in outcomes)
    assert len(server.venue.order_log) == 20  # nothing twice
    assert client.submit_streams_opened == 2


async def test_the_oms_works_a_stream_s_batches_concurrently_up_to_its_window(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(max_batches_in_flight=2)
    client = make_client(server.port, timeout=5.0)
    await client.submit_batch(_entries(1))  # capabilities known, stream open
    server.faults.stall(after_processing=True)  # every answer held until cleared
    sending = [asyncio.create_task(client.submit_batch(_entries(3))) for _ in range(4)]
    await asyncio.sleep(0.3)

    worked_while_held = len(server.venue.order_log) - 1
    server.faults.clear_stall()
    await asyncio.gather(*sending)

    # Two batches worked at once (both held), the other two not even read: flow control.
    assert worked_while_held == 6
    assert len(server.venue.order_log) == 13


async def test_the_oms_reads_no_further_batch_while_its_window_is_full(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(max_batches_in_flight=2)
    client = make_client(server.port)
    call = client._stub.SubmitOrders(None)  # a raw client that ignores the window
    server.faults.stall(after_processing=True)
    for n in range(4):
        batch = pb.OrderBatch(batch_id=n + 1, entries=[_entry_pb(e) for e in _entries(3)])
        await call.write(pb.SubmitOrderRequest(batch=batch))
    await asyncio.sleep(0.3)

    worked_while_held = len(server.venue.order_log)
    server.faults.clear_stall()
    answered = sorted([(await call.read()).batch.batch_id for _ in range(4)])
    call.cancel()

    assert worked_while_held == 6
    assert answered == [1, 2, 3, 4]
    assert len(server.venue.order_log) == 12


def _entry_pb(entry: SubmitEntry) -> pb.BatchEntry:
    return pb.BatchEntry(order=codec.new_order_from_intent(entry.intents[0], account_id=ACCOUNT))


async def test_batched_report_streams_carry_the_same_reports_as_single_ones(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server()
    batched = make_client(server.port)
    single = make_client((await make_server(report_batches=False)).port)
    assert (await batched.capabilities()).report_batches
    for client in (batched, single):
        await client.submit_batch(_entries(25, executions=2))

    async def first(client_reports: object, n: int) -> list[ExecutionReport]:
        out: list[ExecutionReport] = []
        async for report in client_reports:  # type: ignore[attr-defined]
            out.append(report)
            if len(out) == n:
                return out
        return out

    via_batches = await asyncio.wait_for(first(batched.reports(from_seq=0), 50), 5)
    via_single = await asyncio.wait_for(first(single.reports(from_seq=0), 50), 5)
    resumed = await asyncio.wait_for(first(batched.reports(from_seq=30), 20), 5)

    assert [r.seq for r in via_batches] == list(range(1, 51))
    assert [r.seq for r in via_single] == list(range(1, 51))
    assert [r.status for r in via_batches] == [r.status for r in via_single]
    assert [r.seq for r in resumed] == list(range(31, 51))
    assert all(r.fill is None or r.fill.quantity == Decimal(10) for r in via_batches)
