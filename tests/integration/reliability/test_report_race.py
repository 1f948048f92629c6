"""The OMS's report stream can overtake its answer to a submit: the OMS fills an order and
reports it while the answer is still on its way. The worker applies the answer first, so an
order's `submitted` event always comes before its `filled` event, and nothing is missed."""

from __future__ import annotations

import uuid

import pytest

from strategy_worker.domain.ids import execution_id_for
from strategy_worker.oms_sim.server import OmsSimServer

from .harness import encode, eventually, open_rig, strategy_message, unique

pytestmark = pytest.mark.timeout(60)

HOLD_S = 0.4


async def test_report_before_submit_answer_then_answer_applied_first_and_events_in_order(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange: the OMS holds its answer to the first order after filling it.
    run = unique("race")
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=f"{run}-w",
    )
    message = strategy_message(0, run=run)
    execution_id = execution_id_for(uuid.UUID(message["strategy_id"]), message["timestamp"])
    oms_server.faults.stall(seconds=HOLD_S, calls=1, after_processing=True)
    try:
        # Act
        await rig.worker.handle_strategy(encode(message), "test")

        async def all_filled() -> bool:
            orders = await rig.store.get_orders(execution_id)
            return bool(orders) and all(o.status.value == "FILLED" for o in orders)

        await eventually(all_filled, 10, "every first order filled")
        orders = await rig.store.get_orders(execution_id)
        filled_at_oms = {
            o.request.client_order_id
            for o in oms_server.venue.orders(execution_id=execution_id)
            if o.filled_quantity > 0
        }
    finally:
        await rig.close()

    # Assert
    events = [e for e in rig.sink.events if e.get("execution_id") == str(execution_id)]
    kinds = [(str(e["type"]).rsplit(".", 1)[-1], e.get("client_order_id")) for e in events]
    assert kinds[0][0] == "started"
    for order in orders:
        cid = order.client_order_id
        submitted = kinds.index(("order_submitted", cid))
        filled = kinds.index(("order_filled", cid))
        assert submitted < filled, kinds
    assert {o.client_order_id for o in orders} == filled_at_oms
    assert sum(1 for kind, _ in kinds if kind == "order_filled") == len(orders)
