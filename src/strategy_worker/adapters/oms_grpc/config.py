"""Configuration of the OMS gRPC client: the spec's `oms_grpc` section, validated at startup."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RetryConfig(BaseModel):
    """Retries of retryable failures, always with the same client order id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts per call, the first one included."""
    backoff_ms: int = Field(default=1000, ge=0)
    """Ceiling of the first retry's jittered delay; doubles per retry."""
    max_backoff_ms: int = Field(default=30_000, ge=0)
    """Cap on the delay ceiling."""

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryConfig:
        if self.max_backoff_ms < self.backoff_ms:
            raise ValueError("retry.max_backoff_ms must be at least retry.backoff_ms")
        return self


class BreakerConfig(BaseModel):
    """Circuit breaker: open after consecutive failures, probe after a cooldown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=30.0, ge=0)


class TlsConfig(BaseModel):
    """TLS to the OMS; with cert_file and key_file it is mutual TLS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    ca_file: Path | None = None
    """PEM bundle of CAs trusted for the server; None = the system roots."""
    cert_file: Path | None = None
    """Client certificate chain (PEM) for mutual TLS."""
    key_file: Path | None = None
    """Client private key (PEM) for mutual TLS."""
    server_name: str | None = None
    """Name expected in the server certificate when it differs from `host`."""

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        return self


class OmsClientConfig(BaseModel):
    """The `oms_grpc` section of the worker's configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "localhost"
    port: int = Field(default=50051, ge=1, le=65535)
    timeout: float = Field(default=5.0, gt=0)
    """Deadline of each unary call attempt and of each submit_many batch, in seconds."""
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    tls: TlsConfig = TlsConfig()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"
