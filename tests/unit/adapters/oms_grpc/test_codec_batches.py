"""Wire mapping of contract 1.2: what GetCapabilities says about batches."""

from __future__ import annotations

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.domain.orders import OmsCapabilities, OrderType
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb


def test_batch_capabilities_round_trip() -> None:
    caps = OmsCapabilities(
        order_types=frozenset({OrderType.MARKET, OrderType.LIMIT}),
        contract_version="1.2",
        order_batches=True,
        max_batch_orders=500,
        max_batches_in_flight=4,
        report_batches=True,
    )

    assert codec.capabilities_from_pb(codec.capabilities_to_pb(caps)) == caps


def test_a_1_1_answer_means_no_batches() -> None:
    old = pb.GetCapabilitiesResponse(contract_version="1.1", order_types=[pb.ORDER_TYPE_MARKET])

    caps = codec.capabilities_from_pb(old)

    assert (caps.order_batches, caps.max_batch_orders, caps.report_batches) == (False, 0, False)


def test_batches_without_a_size_or_a_window_count_as_none() -> None:
    # An OMS that says order_batches but announces no size or no window cannot be sent
    # a batch safely: the client keeps the per-order path.
    for size, window in ((0, 4), (500, 0)):
        msg = pb.GetCapabilitiesResponse(
            order_batches=True, max_batch_orders=size, max_batches_in_flight=window
        )
        caps = codec.capabilities_from_pb(msg)
        assert (caps.order_batches, caps.max_batch_orders, caps.max_batches_in_flight) == (
            False,
            0,
            0,
        )
