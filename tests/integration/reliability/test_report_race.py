"""The OMS's report stream can overtake its answer to a submit: the OMS fills an order and
reports it while the answer is still on its way. Whichever arrives first goes through the
order state machine, so each order's row ends right (its OMS id, quantity and price), its
`order_submitted` event comes before its `order_filled` event, and no fill is missed or
booked twice.

(The worker used to hold reports back until the submit answer was applied; the new runtime
applies both through the state machine in any order, so only the observable guarantees are
checked here, not which one was applied first.)"""

from __future__ import annotations

from decimal import Decimal

import pytest

from strategy_worker.oms_sim.server import OmsSimServer

from .harness import encode, eventually, execution_of, fetch_all, open_rig, strategy_message, unique

pytestmark = pytest.mark.timeout(60)

HOLD_S = 0.4


async def test_report_overtaking_the_submit_answer_leaves_rows_right_and_events_in_order(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange: the OMS holds its answer to the first submit call after filling its orders.
    run = unique("race")
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=f"{run}-w",
    )
    message = strategy_message(0, run=run)
    execution_id = execution_of(message)
    oms_server.faults.stall(seconds=HOLD_S, calls=1, after_processing=True)
    try:
        # Act
        await rig.worker.handle_strategy(encode(message), "test")

        async def settled() -> bool:
            orders = await rig.store.get_orders(execution_id)
            if not orders or any(o.status.value != "FILLED" or not o.oms_order_id for o in orders):
                return False
            waiting = await fetch_all(
                migrated_dsn,
                "SELECT count(*) AS n FROM event_outbox WHERE published_seq IS NULL",
            )
            return bool(waiting[0]["n"] == 0)

        await eventually(settled, 10, "every first order filled and every event published")
        orders = await rig.store.get_orders(execution_id)
        fills = await rig.store.get_fills(execution_id)
        at_oms = {o.request.client_order_id: o for o in oms_server.venue.orders()}
    finally:
        await rig.close()

    # Assert: each order's row is the OMS's.
    assert len(orders) == 3
    assert {o.client_order_id for o in orders} == set(at_oms)
    for order in orders:
        venue = at_oms[order.client_order_id]
        assert order.oms_order_id == venue.oms_order_id
        assert order.filled_quantity == venue.filled_quantity == order.quantity
        assert order.filled_price is not None
        average = venue.filled_notional / venue.filled_quantity
        assert abs(order.filled_price - average) < Decimal("0.0001")
    assert sorted(f.fill.fill_id for f in fills) == sorted(
        f.fill_id for o in at_oms.values() for f in o.fills
    )
    # Events, each once (the relay delivers at least once), in the order they were committed.
    events = [e for e in rig.sink.unique_events() if e.get("execution_id") == str(execution_id)]
    kinds = [(str(e["type"]).rsplit(".", 1)[-1], e.get("client_order_id")) for e in events]
    assert kinds[0][0] == "started"
    for order in orders:
        cid = order.client_order_id
        assert kinds.count(("order_submitted", cid)) == 1, kinds
        assert kinds.index(("order_submitted", cid)) < kinds.index(("order_filled", cid)), kinds
    filled_events = [e["fill_id"] for e in events if str(e["type"]).endswith(".order_filled")]
    assert sorted(filled_events) == sorted(f.fill.fill_id for f in fills)
