"""Connection settings shared by every Kafka client of the worker: servers, SSL and SASL."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from strategy_worker.config import KafkaConfig


def ssl_context(config: KafkaConfig) -> ssl.SSLContext | None:
    """An SSL context for SSL / SASL_SSL (CA, optional client cert for mutual TLS), else None."""
    if config.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=config.ssl.ca_file,
        certfile=config.ssl.cert_file,
        keyfile=config.ssl.key_file,
    )
    context.check_hostname = config.ssl.check_hostname
    return context


def client_kwargs(config: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer / AIOKafkaAdminClient."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "security_protocol": config.security_protocol,
        "request_timeout_ms": config.request_timeout_ms,
    }
    context = ssl_context(config)
    if context is not None:
        kwargs["ssl_context"] = context
    if config.security_protocol.startswith("SASL"):
        password = config.sasl.password
        kwargs.update(
            sasl_mechanism=config.sasl.mechanism,
            sasl_plain_username=config.sasl.username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return kwargs
