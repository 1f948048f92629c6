"""OmsClientConfig: the spec's oms_grpc keys, defaults from the spec, unknown keys refused."""

from __future__ import annotations

import pydantic
import pytest

from strategy_worker.adapters.oms_grpc.config import OmsClientConfig


def test_spec_section_parses_with_spec_defaults() -> None:
    config = OmsClientConfig.model_validate(
        {
            "host": "oms.internal",
            "port": 50051,
            "timeout": 5,
            "retry": {"max_attempts": 3, "backoff_ms": 1000},
        }
    )

    assert config.target == "oms.internal:50051"
    assert config.timeout == 5.0
    assert config.retry.max_attempts == 3
    assert config.retry.backoff_ms == 1000
    assert config.tls.enabled is False


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(pydantic.ValidationError):
        OmsClientConfig.model_validate({"retry": {"max_attempts": 3, "backof_ms": 10}})


def test_client_cert_without_key_is_an_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="together"):
        OmsClientConfig.model_validate({"tls": {"enabled": True, "cert_file": "c.pem"}})


def test_backoff_cap_below_base_is_an_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_backoff_ms"):
        OmsClientConfig.model_validate({"retry": {"backoff_ms": 1000, "max_backoff_ms": 10}})


def test_config_is_frozen() -> None:
    config = OmsClientConfig()

    with pytest.raises(pydantic.ValidationError):
        config.port = 1  # type: ignore[misc]
