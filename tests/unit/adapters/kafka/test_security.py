"""Kafka connection settings from config: plaintext, SSL (with mutual TLS) and SASL."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from strategy_worker.adapters.kafka.security import client_kwargs, ssl_context
from strategy_worker.config import KafkaConfig


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_plaintext_has_no_ssl_and_no_sasl() -> None:
    kwargs = client_kwargs(KafkaConfig(bootstrap_servers="b:9092"))

    assert kwargs["bootstrap_servers"] == "b:9092"
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in kwargs
    assert "sasl_mechanism" not in kwargs


def test_ssl_builds_a_verifying_context_with_the_client_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = KafkaConfig.model_validate(
        {
            "security_protocol": "SSL",
            "ssl": {"ca_file": cert, "cert_file": cert, "key_file": key},
        }
    )

    context = ssl_context(config)

    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert client_kwargs(config)["ssl_context"] is not None


def test_sasl_ssl_passes_mechanism_and_credentials() -> None:
    config = KafkaConfig.model_validate(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "svc", "password": "pw"},
        }
    )

    kwargs = client_kwargs(config)

    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", "pw")
    assert "pw" not in repr(config)
