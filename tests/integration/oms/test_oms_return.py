"""An OMS that was away and is back: readiness and orders follow within seconds (issue 12,
item 18: /ready stayed 503 for 15 s after the OMS was back, orders resumed after 33 s)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from strategy_worker.adapters.oms_grpc.breaker import BreakerState
from strategy_worker.errors import OmsError

from .conftest import ACCOUNT, ClientFactory, ServerFactory, make_intent

pytestmark = pytest.mark.timeout(120)


async def test_once_the_oms_is_back_a_ping_says_ready_and_orders_flow_within_seconds(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    # The shipped retry and breaker settings (1 s .. 30 s backoff, 5 failures, 30 s reset).
    server = await make_server()
    client = make_client(
        server.port,
        timeout=1.0,
        retry={"max_attempts": 1, "backoff_ms": 1000, "max_backoff_ms": 30000},
        breaker={"failure_threshold": 5, "reset_timeout_s": 30},
    )
    execution_id = uuid.uuid4()
    await client.submit(make_intent(1, execution_id=execution_id), account_id=ACCOUNT)

    await server.stop()
    for _ in range(5):
        with pytest.raises(OmsError):
            await client.list_orders(execution_id)
    assert client.breaker.state is BreakerState.OPEN
    await asyncio.sleep(20)  # away long enough for the channel's reconnects to back off

    await server.start()
    back = time.monotonic()
    while not await client.ping():  # what /ready and the worker's OMS probe ask
        assert time.monotonic() - back < 10, "the OMS is back and ping still fails"
        await asyncio.sleep(0.25)
    ready_after = time.monotonic() - back

    # Within 3 s of reconnect ceiling (+20% jitter), not the 30 s of the retry ceiling.
    assert ready_after < 5.0
    # The breaker's 30 s reset has not passed: the ping closed it, orders go now.
    assert client.breaker.state is BreakerState.CLOSED
    order = await client.submit(make_intent(2, execution_id=execution_id), account_id=ACCOUNT)
    assert order.client_order_id
