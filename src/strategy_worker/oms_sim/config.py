"""Configuration of the paper-trading OMS: fills, fees, faults and its price source."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PricesConfig(BaseModel):
    """Where the simulator's prices come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["random_walk", "replay"] = "random_walk"
    seed: int = 42
    start_prices: dict[str, Decimal] = Field(default_factory=dict)
    """Random walk: known symbols' first prices; other symbols get a seeded start price."""
    volatility: Decimal = Field(default=Decimal("0.001"), ge=0, le=Decimal("0.5"))
    """Random walk: standard deviation of the relative move per step."""
    step_s: float = Field(default=1.0, gt=0)
    """Random walk: simulated seconds per step (time-based advance)."""
    strict: bool = False
    """Random walk: when true, symbols without a start price have no price (orders reject)."""
    file: Path | None = None
    """Replay: CSV (timestamp,symbol,price) or JSONL with the same keys."""

    @model_validator(mode="after")
    def _replay_needs_file(self) -> PricesConfig:
        if self.kind == "replay" and self.file is None:
            raise ValueError("prices.file is required for kind=replay")
        return self


class ServerTlsConfig(BaseModel):
    """TLS for the simulator; with client_ca_file it requires client certificates (mTLS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _files_when_enabled(self) -> ServerTlsConfig:
        if self.enabled and (self.cert_file is None or self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file are required when tls is enabled")
        return self


class OmsSimConfig(BaseModel):
    """The paper OMS (`strategy-worker oms-sim`): a venue that fills against simulated prices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    """0 binds any free port (tests); `OmsSimServer.start()` returns the bound one."""
    slippage_bps: Decimal = Field(default=Decimal(5), ge=0, le=Decimal(1000))
    """MARKET fills pay this many basis points above (buys) or below (sells) the price."""
    fee_bps: Decimal = Field(default=Decimal(0), ge=0)
    """Fee as basis points of each fill's notional."""
    fee_per_share: Decimal = Field(default=Decimal(0), ge=0)
    """Fee per share filled, added to fee_bps."""
    partial_fill_slices: int = Field(default=1, ge=1, le=100)
    """Orders fill in this many slices, one per price tick (1 = all at once)."""
    rejection_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of new orders rejected at random (seeded, so reproducible)."""
    seed: int = 7
    """Seed of the rejection draws."""
    latency_ms: float = Field(default=0.0, ge=0.0)
    """Added to every call, to look like a remote venue."""
    tick_interval_s: float = Field(default=0.05, gt=0)
    """How often working orders are checked against fresh prices."""
    initial_cash: Decimal = Decimal(1_000_000)
    """Cash each account starts with (no buying-power check: the worker's risk gate owns it)."""
    native_protection: bool = True
    """Hold STOP, STOP_LIMIT, TRAILING_STOP, OCO groups and brackets natively (contract 1.1).
    false: GetCapabilities reports MARKET and LIMIT only, no groups, and such orders are
    refused, so the worker emulates its protection against the same venue."""
    unsupported_order_types: list[Literal["STOP", "STOP_LIMIT", "TRAILING_STOP"]] = Field(
        default_factory=list
    )
    """With native_protection on, these types are still reported unsupported (and refused)."""
    order_batches: bool = True
    """Take contract 1.2's OrderBatch on SubmitOrders. false: a 1.1 OMS (GetCapabilities
    says no, and a batch is refused), so the client keeps the per-order path."""
    max_batch_orders: int = Field(default=1000, ge=1, le=100_000)
    """Orders per batch at most (GetCapabilities.max_batch_orders)."""
    max_batches_in_flight: int = Field(default=4, ge=1, le=1000)
    """Batches of one stream worked on at once (GetCapabilities.max_batches_in_flight)."""
    report_batches: bool = True
    """Serve StreamExecutionReportBatches (contract 1.2)."""
    prices: PricesConfig = PricesConfig()
    tls: ServerTlsConfig = ServerTlsConfig()
