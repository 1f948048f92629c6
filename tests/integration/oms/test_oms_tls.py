"""TLS and mutual TLS between the OMS client and the paper OMS, with a CA made in the test."""

from __future__ import annotations

import uuid

import pytest

from strategy_worker.adapters.oms_grpc import OmsCallError
from strategy_worker.domain.orders import OrderStatus

from .conftest import ACCOUNT, ClientFactory, Pki, ServerFactory, make_intent

pytestmark = pytest.mark.integration


async def test_tls_handshake_with_server_name_override_then_orders_flow(
    make_server: ServerFactory, make_client: ClientFactory, pki: Pki
) -> None:
    server = await make_server(
        tls={"enabled": True, "cert_file": pki.server_cert, "key_file": pki.server_key}
    )
    client = make_client(
        server.port, tls={"enabled": True, "ca_file": pki.ca, "server_name": "oms.test"}
    )

    order = await client.submit(make_intent(1, execution_id=uuid.uuid4()), account_id=ACCOUNT)

    assert await client.ping()
    assert order.status is OrderStatus.FILLED


async def test_mutual_tls_admits_a_client_with_a_certificate_from_the_ca(
    make_server: ServerFactory, make_client: ClientFactory, pki: Pki
) -> None:
    server = await make_server(
        tls={
            "enabled": True,
            "cert_file": pki.server_cert,
            "key_file": pki.server_key,
            "client_ca_file": pki.ca,
        }
    )
    client = make_client(
        server.port,
        tls={
            "enabled": True,
            "ca_file": pki.ca,
            "cert_file": pki.client_cert,
            "key_file": pki.client_key,
        },
    )

    order = await client.submit(make_intent(1, execution_id=uuid.uuid4()), account_id=ACCOUNT)

    assert order.status is OrderStatus.FILLED


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    make_server: ServerFactory, make_client: ClientFactory, pki: Pki
) -> None:
    server = await make_server(
        tls={
            "enabled": True,
            "cert_file": pki.server_cert,
            "key_file": pki.server_key,
            "client_ca_file": pki.ca,
        }
    )
    client = make_client(
        server.port, retry={"max_attempts": 1}, tls={"enabled": True, "ca_file": pki.ca}
    )

    assert not await client.ping()
    with pytest.raises(OmsCallError) as info:
        await client.submit(make_intent(1, execution_id=uuid.uuid4()), account_id=ACCOUNT)
    assert info.value.code == "UNAVAILABLE"
    assert server.venue.order_log == []


async def test_plaintext_client_is_refused_by_a_tls_server_with_a_clear_error(
    make_server: ServerFactory, make_client: ClientFactory, pki: Pki
) -> None:
    server = await make_server(
        tls={"enabled": True, "cert_file": pki.server_cert, "key_file": pki.server_key}
    )
    client = make_client(server.port, retry={"max_attempts": 2, "backoff_ms": 10})

    assert not await client.ping()
    with pytest.raises(OmsCallError) as info:
        await client.submit(make_intent(1, execution_id=uuid.uuid4()), account_id=ACCOUNT)

    message = str(info.value)
    assert info.value.code == "UNAVAILABLE"
    assert "oms_grpc.tls (now off)" in message
    assert f"127.0.0.1:{server.port}" in message
    assert server.venue.order_log == []


async def test_client_trusting_another_ca_refuses_the_server(
    make_server: ServerFactory, make_client: ClientFactory, pki: Pki
) -> None:
    server = await make_server(
        tls={"enabled": True, "cert_file": pki.server_cert, "key_file": pki.server_key}
    )
    # The server's own certificate is not a CA: the chain cannot verify.
    client = make_client(
        server.port,
        retry={"max_attempts": 1},
        tls={"enabled": True, "ca_file": pki.client_cert, "server_name": "oms.test"},
    )

    with pytest.raises(OmsCallError) as info:
        await client.submit(make_intent(1, execution_id=uuid.uuid4()), account_id=ACCOUNT)
    assert info.value.code == "UNAVAILABLE"
