"""Fixtures: a real paper OMS on a loopback port and real gRPC clients with fast settings."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.oms_grpc import OmsClientConfig, OmsGrpcClient
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.oms_sim import ManualPrices, OmsSimConfig, OmsSimServer

ACCOUNT = "user-42"

# Small timeouts and backoffs so failure paths run in well under a second.
FAST_CLIENT: dict[str, Any] = {
    "host": "127.0.0.1",
    "timeout": 0.4,
    "retry": {"max_attempts": 3, "backoff_ms": 20, "max_backoff_ms": 100},
    "breaker": {"failure_threshold": 3, "reset_timeout_s": 0.3},
}


@pytest.fixture
def prices() -> ManualPrices:
    return ManualPrices({"AAPL": Decimal("100"), "MSFT": Decimal("300")})


ServerFactory = Callable[..., Awaitable[OmsSimServer]]
ClientFactory = Callable[..., OmsGrpcClient]


@pytest.fixture
async def make_server(prices: ManualPrices) -> AsyncIterator[ServerFactory]:
    servers: list[OmsSimServer] = []

    async def make(**overrides: Any) -> OmsSimServer:
        config = OmsSimConfig.model_validate(
            {"port": 0, "tick_interval_s": 3600, "slippage_bps": 5} | overrides
        )
        server = OmsSimServer(config, prices=prices)
        servers.append(server)
        await server.start()
        return server

    yield make
    for server in servers:
        await server.stop(grace=None)


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    clients: list[OmsGrpcClient] = []

    def make(port: int, **overrides: Any) -> OmsGrpcClient:
        config = OmsClientConfig.model_validate(FAST_CLIENT | {"port": port} | overrides)
        client = OmsGrpcClient(config, registry=CollectorRegistry())
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def server(make_server: ServerFactory) -> OmsSimServer:
    return await make_server()


@pytest.fixture
def client(make_client: ClientFactory, server: OmsSimServer) -> OmsGrpcClient:
    return make_client(server.port)


def make_intent(
    seq: int,
    *,
    execution_id: uuid.UUID,
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    quantity: str = "10",
    order_type: OrderType = OrderType.MARKET,
    limit_price: str | None = None,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=f"sw-{execution_id.hex}-{seq:06d}",
        execution_id=execution_id,
        intent_seq=seq,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=Decimal(quantity),
        price=Decimal("100"),
        purpose=OrderPurpose.INITIAL,
        limit_price=None if limit_price is None else Decimal(limit_price),
    )


def metric(client: OmsGrpcClient, name: str, **labels: str) -> float:
    return float(client.metrics.registry.get_sample_value(name, labels) or 0.0)


@dataclass(frozen=True)
class Pki:
    """A throwaway CA with a server and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA generated inside the test run, never a committed key."""
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oms-test-ca")])
    ca_cert = _issue("oms-test-ca", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(
        "oms.test",
        server_key,
        ca_name,
        ca_key,
        san=[x509.DNSName("oms.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue(
        "strategy-worker", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    pem = serialization.Encoding.PEM
    (root / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (root / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (root / "client.pem").write_bytes(client_cert.public_bytes(pem))
    return Pki(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=_write_key(root / "server.key", server_key),
        client_cert=root / "client.pem",
        client_key=_write_key(root / "client.key", client_key),
    )
