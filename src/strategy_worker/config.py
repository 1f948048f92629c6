"""The worker's configuration: one frozen, validated object (`WorkerConfig`) with a section
per component, built once at startup by `config_loader.load_config`. Unknown keys are errors;
every error names the key path, e.g. ``config.yaml: risk.max_position_size: must be in (0, 1]``.
"""

from __future__ import annotations

import re
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from strategy_worker.adapters.oms_grpc.config import OmsClientConfig
from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.domain.strategy import MAX_MESSAGE_BYTES


class _Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=65535)]


def _ratio(value: Decimal) -> Decimal:
    if not (Decimal(0) < value <= Decimal(1)):
        raise ValueError("must be in (0, 1]")
    return value


# --------------------------------------------------------------------------- kafka


class KafkaTopics(_Section):
    approved: str = "strategy.approved"
    execution: str = "strategy.execution"
    control: str = "strategy.control"
    dead_letter: str = "strategy.approved.dlq"
    #: Closed bars from the market-data side (docs/signals.md); null: the worker builds its
    #: bars from the price announcements it receives (redis.price_channel).
    bars: str | None = Field(default="market.bars", min_length=1)


class KafkaSsl(_Section):
    """PEM files for SSL / SASL_SSL; `ca_file` alone means server-verified TLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True


class KafkaSasl(_Section):
    """SASL credentials; the password only from KAFKA_SASL_PASSWORD (or its _FILE)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str | None = None
    password: SecretStr | None = None


class KafkaConfig(_Section):
    bootstrap_servers: str = "localhost:9092"
    consumer_group: str = "strategy-worker"
    client_id: str = "strategy-worker"
    topics: KafkaTopics = KafkaTopics()
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl: KafkaSsl = KafkaSsl()
    sasl: KafkaSasl = KafkaSasl()
    #: The one size limit of incoming messages: larger records are dead-lettered unread
    #: (`oversized`), and intake's parser refuses the same size (`payload_too_large`).
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, gt=0)
    max_poll_records: int = Field(default=100, gt=0)
    #: Done offsets are committed at most this often (and always on stop or revoke).
    commit_interval: Seconds = 1.0
    session_timeout_ms: int = Field(default=10_000, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    producer_linger_ms: int = Field(default=5, ge=0)
    request_timeout_ms: int = Field(default=30_000, gt=0)

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl.username and self.sasl.password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl.username and "
                "KAFKA_SASL_PASSWORD"
            )
        return self


# --------------------------------------------------------------------------- oms


# The OMS client's and the database's sections are the adapters' own frozen models, so a
# key means the same thing everywhere: OmsClientConfig (host, port, timeout, retry, breaker,
# tls) and DatabaseConfig (url or host/port/name/user, password from DB_PASSWORD, pool, ssl).


# --------------------------------------------------------------------------- risk


class RiskSection(_Section):
    """The spec's risk limits; money in Decimal, ratios as fractions of the portfolio."""

    max_total_exposure: PositiveDecimal = Decimal("1000000.00")
    #: Per user (all of one user_id's executions, fleet-wide); null = no per-user cap.
    max_user_exposure: PositiveDecimal | None = None
    #: Fleet-wide order rate toward the OMS (one token bucket in Redis); null = off. Closing
    #: orders are never throttled.
    fleet_orders_per_second: PositiveDecimal | None = None
    fleet_order_burst: int = Field(default=100, ge=1)
    #: A strategy the remaining capacity funds below this fraction is refused; else it
    #: starts scaled down (README "Exposure limits").
    min_funded_fraction: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    max_position_size: Decimal = Decimal("0.30")
    max_daily_loss: Decimal = Decimal("0.05")
    max_daily_loss_amount: PositiveDecimal = Decimal("50000.00")
    min_order_value: PositiveDecimal = Decimal("100.00")
    max_order_value: PositiveDecimal = Decimal("100000.00")
    #: A WARNING risk event at this fraction of a limit (24% of a 30% position limit).
    warning_ratio: Decimal = Decimal("0.80")
    #: Stop-loss trigger buffer against whipsaws.
    stop_loss_buffer: Decimal = Decimal("0.02")
    #: Worker default stop-loss, a fraction below average cost in (0, 0.5]; a strategy's own
    #: `stop_loss_pct` applies when tighter. None: only strategies that set one are stopped.
    stop_loss_pct: Decimal | None = Field(default=None, gt=0, le=Decimal("0.5"))
    #: UTC time of day at which a trading day starts (daily loss resets, HALTED lifts).
    trading_day_start: time = time(0, 0)
    #: Order rate limits (token buckets): per execution per minute, and for the whole worker
    #: per second, each with the burst it may send at once.
    max_orders_per_minute: int = Field(default=120, ge=1)
    execution_order_burst: int = Field(default=100, ge=1)
    max_orders_per_second: int = Field(default=50, ge=1)
    worker_order_burst: int = Field(default=200, ge=1)
    #: Cash reserve: sizing, rebalancing and the cash check budget every buy as if it filled
    #: slippage_reserve_bps above its reference price (a sell as many below) and paid
    #: fee_reserve_bps of its notional plus fee_reserve_per_order: fills within the reserve
    #: never take cash below zero. 0 / 0 / 0 budgets at the reference price exactly.
    slippage_reserve_bps: Decimal = Field(default=Decimal(10), ge=0, le=Decimal(1000))
    fee_reserve_bps: Decimal = Field(default=Decimal(10), ge=0, le=Decimal(1000))
    fee_reserve_per_order: Decimal = Field(default=Decimal("1.00"), ge=0, allow_inf_nan=False)
    #: Protective orders (README "Protective orders"): worker defaults a strategy may
    #: tighten, never loosen. null = no trailing stop / take-profit unless a strategy asks.
    trailing_stop_pct: Decimal | None = Field(default=None, gt=0, le=Decimal("0.5"))
    take_profit_pct: Decimal | None = Field(default=None, gt=0, le=Decimal(10))
    #: native (rest at the OMS where supported) | emulated (the worker holds them) | auto.
    protection: Literal["native", "emulated", "auto"] = "auto"
    #: null: a triggered stop exits at MARKET; else LIMIT this fraction below the level.
    protection_limit_offset_pct: Decimal | None = Field(default=None, gt=0, le=Decimal("0.5"))
    #: Seconds a native stop may stay unfilled past its level before the worker exits itself.
    protection_native_grace: Seconds = 5.0

    _ratios = field_validator(
        "max_position_size", "max_daily_loss", "warning_ratio", "stop_loss_buffer"
    )(_ratio)

    @field_validator("trading_day_start", mode="before")
    @classmethod
    def _time_of_day(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 13:30 as the base-60 integer 810: never take a number.
        if isinstance(value, int | Decimal | float):
            raise ValueError('write the time in quotes, e.g. "13:30" (a UTC time of day)')
        if isinstance(value, str) and re.search(r"(?:[zZ]|[+-]\d\d:?\d\d)$", value.strip()):
            raise ValueError('a UTC time of day without a zone, e.g. "13:30"')
        return value

    @field_validator("trading_day_start")
    @classmethod
    def _naive_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError('a UTC time of day without a zone, e.g. "13:30"')
        return value

    @model_validator(mode="after")
    def _order_bounds(self) -> RiskSection:
        if self.min_order_value > self.max_order_value:
            raise ValueError("min_order_value must not exceed max_order_value")
        return self


# --------------------------------------------------------------------------- execution


class ExecutionSection(_Section):
    rebalance_interval: Seconds = 300.0
    position_check_interval: Seconds = 60.0
    #: Rebalance when a symbol's weight is this far (absolute fraction) from its target.
    drift_threshold: Decimal = Decimal("0.05")
    #: close: the spec's behaviour (close every position on shutdown);
    #: handover: leave positions open for another worker to resume.
    shutdown_policy: Literal["close", "handover"] = "close"
    grace_period: Seconds = 30.0
    lease_seconds: Seconds = 15.0
    heartbeat: Seconds = 5.0
    reconcile_interval: Seconds = 60.0
    #: How long a stop waits for its closing orders to fill before reconciling.
    close_timeout: Seconds = 10.0

    _drift = field_validator("drift_threshold")(_ratio)

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> ExecutionSection:
        if self.heartbeat >= self.lease_seconds:
            raise ValueError("heartbeat must be shorter than lease_seconds")
        return self


# --------------------------------------------------------------------------- signals


class SignalsSection(_Section):
    """Bars, indicators and entry/exit signals (docs/signals.md)."""

    #: A bar counts as closed when its end is at most this far after the worker's clock
    #: (a bar published at its close must not be refused for a few ms of clock skew).
    max_clock_skew: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    #: signal_decisions rows older than this many days are pruned.
    decision_retention_days: int = Field(default=90, ge=1)
    #: market_bars rows older than this many days are pruned; null keeps them (warm-up
    #: history and rebuilds read them).
    bar_retention_days: int | None = Field(default=None, ge=1)


# --------------------------------------------------------------------------- stores


class RedisSection(_Section):
    #: A full URL (REDIS_URL, redis:// or rediss://) wins over host/port/db/tls.
    url: SecretStr | None = None
    host: str = "localhost"
    port: Port = 6379
    db: int = Field(default=0, ge=0)
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    #: Market data writes one hash per symbol at `<key_prefix><SYMBOL>` (docs/messages.md).
    key_prefix: str = "prices:"
    #: Prices older than this are treated as missing.
    price_max_age: Seconds = 120.0
    #: After each HSET the market-data side PUBLISHes the symbol here, so stop-losses react
    #: to the price within milliseconds; null turns the feed off (the monitor cycle remains).
    price_channel: str | None = Field(default="prices.updates", min_length=1)
    socket_timeout: Seconds = 2.0

    def connection_url(self) -> str:
        """The redis URL without the password (the password goes separately)."""
        if self.url is not None:
            return self.url.get_secret_value()
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


class RetentionSection(_Section):
    """How long position_snapshots keep their grain (adapters/postgres/retention.py)."""

    #: Thin old snapshots every `interval` (false: the table keeps every row).
    enabled: bool = True
    #: Every snapshot younger than this is kept (seconds; 1 day).
    snapshots_fine: Seconds = 86_400.0
    #: Older ones, up to this age, are thinned to the last, lowest and highest of each hour;
    #: older still, of each trading day (seconds; 7 days). First and latest always kept.
    snapshots_hourly: Seconds = 604_800.0
    #: Seconds between thinning runs (one worker at a time runs one: a lease in the table).
    interval: Seconds = 3_600.0
    #: Rows per DELETE: each statement is short, so the worker's own writes never queue.
    batch: int = Field(default=1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _windows_ordered(self) -> RetentionSection:
        if self.snapshots_hourly <= self.snapshots_fine:
            raise ValueError("snapshots_hourly must be longer than snapshots_fine")
        return self


# --------------------------------------------------------------------------- observability


class MetricsSection(_Section):
    enabled: bool = True
    #: Loopback by default: /metrics names which executions hold which symbols. A scraper
    #: from outside needs an explicit host (e.g. the pod IP, or 0.0.0.0 behind a firewall).
    host: str = "127.0.0.1"
    port: Port = 9091


class HealthSection(_Section):
    #: Loopback by default; an orchestrator probing from outside sets the pod's address.
    host: str = "127.0.0.1"
    port: Port = 8080
    #: Each readiness check (Kafka, PostgreSQL, OMS) must answer within this.
    check_timeout: Seconds = 2.0


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json_output: bool = Field(default=True, alias="json")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Environment = Literal["development", "staging", "production"]


# --------------------------------------------------------------------------- api and control


class ApiTls(_Section):
    """PEM files; with both set, `strategy-worker api` serves HTTPS and WSS only."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> ApiTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class ApiAuth(_Section):
    """How bearer tokens (JWT) are verified: `sub` is the user id."""

    #: EdDSA / RS256 / ES256 verify with a public key (API_JWT_PUBLIC_KEY or public_key_file),
    #: so the API cannot mint tokens; HS256 shares API_JWT_SECRET with the issuer.
    algorithm: Literal["EdDSA", "RS256", "ES256", "HS256"] = "EdDSA"
    public_key_file: Path | None = None
    #: The public key's PEM text itself (API_JWT_PUBLIC_KEY); wins over public_key_file.
    public_key: str | None = None
    #: HS256 only, from API_JWT_SECRET (or API_JWT_SECRET_FILE), never from this file.
    secret: SecretStr | None = None
    #: When set, tokens must carry this `iss` / `aud`.
    issuer: str | None = None
    audience: str | None = None
    #: The claim listing the caller's roles (a string or a list); `operator_role` in it
    #: sees and steers every execution.
    roles_claim: str = Field(default="roles", min_length=1)
    operator_role: str = Field(default="operator", min_length=1)
    #: Clock skew tolerated on `exp` / `nbf`.
    leeway: float = Field(default=30.0, ge=0, allow_inf_nan=False)


class ApiStream(_Section):
    """The live event stream (WebSocket) and where it follows the execution events."""

    #: kafka: the `strategy.execution` topic; outbox: the `event_outbox` table (no Kafka).
    source: Literal["kafka", "outbox"] = "kafka"
    heartbeat: Seconds = 15.0
    #: Recent events kept in memory; a client resuming from an older cursor is told to
    #: reload (`reset`) instead of silently missing events.
    buffer_events: int = Field(default=50_000, ge=100)
    #: Frames queued per client; a client this far behind is disconnected and resumes.
    client_queue: int = Field(default=2_000, ge=10)
    outbox_poll_interval: Seconds = 0.1


class ApiSection(_Section):
    """`strategy-worker api`: the REST + WebSocket API and the dashboard (docs/api.md)."""

    #: Loopback by default; put a TLS-terminating proxy or `tls` in front for others.
    host: str = "127.0.0.1"
    port: Port = 8000
    tls: ApiTls = ApiTls()
    auth: ApiAuth = ApiAuth()
    stream: ApiStream = ApiStream()
    #: Ed25519 private key (PEM) signing control requests, from API_CONTROL_SIGNING_KEY or
    #: this file; the workers verify with its public half (control_auth.verify_key_file).
    control_signing_key_file: Path | None = None
    control_signing_key: SecretStr | None = None
    #: A control request's signature is valid this long (it waits for the owner worker).
    control_token_ttl: Seconds = 86_400.0
    default_page_size: int = Field(default=50, ge=1, le=1000)
    max_page_size: int = Field(default=500, ge=1, le=10_000)


class ControlAuthSection(_Section):
    """How the worker verifies who sent a control request (src/strategy_worker/auth/)."""

    #: Refuse unsigned control requests (CRITICAL risk event). null: true unless
    #: `environment` is development.
    require_signed: bool | None = None
    #: Ed25519 public key (PEM) of the API's control signing key, from CONTROL_VERIFY_KEY
    #: or this file.
    verify_key_file: Path | None = None
    verify_key: str | None = None
    #: Kafka principals trusted to send unsigned requests for the user they name (only
    #: meaningful where the transport reports the writer's principal; see README).
    trusted_principals: tuple[str, ...] = ()


def is_development(environment: str) -> bool:
    """Whether `environment` (ENVIRONMENT) is development, where defaults relax (unsigned
    control requests accepted, development keys): the same reading as
    `WorkerConfig.is_development`."""
    return environment.strip().lower() == "development"


class WorkerConfig(_Section):
    """Everything the worker reads at startup; see config/config.yaml for the annotated file."""

    #: The kind of deployment (ENVIRONMENT). development: a local run, defaults for a laptop;
    #: staging: production's defaults (components that guard access, such as requiring signed
    #: control requests, take their strict default outside development) on a test network;
    #: production: as staging, and Kafka and the OMS channel must use TLS (refused otherwise).
    environment: Environment = "development"
    #: Identifies this worker in leases and logs; defaults to hostname-pid at runtime.
    worker_id: str | None = None
    kafka: KafkaConfig = KafkaConfig()
    oms_grpc: OmsClientConfig = OmsClientConfig()
    risk: RiskSection = RiskSection()
    execution: ExecutionSection = ExecutionSection()
    signals: SignalsSection = SignalsSection()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisSection = RedisSection()
    retention: RetentionSection = RetentionSection()
    metrics: MetricsSection = MetricsSection()
    health: HealthSection = HealthSection()
    logging: LoggingSection = LoggingSection()
    api: ApiSection = ApiSection()
    control_auth: ControlAuthSection = ControlAuthSection()

    @property
    def require_signed_control(self) -> bool:
        """`control_auth.require_signed`, defaulting to true outside development."""
        explicit = self.control_auth.require_signed
        return not is_development(self.environment) if explicit is None else explicit

    @property
    def is_development(self) -> bool:
        """A local run: components may choose lenient defaults (never outside development)."""
        return self.environment == "development"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @model_validator(mode="after")
    def _production_transport(self) -> WorkerConfig:
        # The spec: "Enable TLS for gRPC and Kafka connections in production".
        if not self.is_production:
            return self
        if self.kafka.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise ValueError(
                f"environment production refuses kafka.security_protocol "
                f"{self.kafka.security_protocol} (no TLS): use SSL or SASL_SSL"
            )
        if not self.oms_grpc.tls.enabled:
            raise ValueError(
                "environment production refuses oms_grpc.tls.enabled false (orders in clear): "
                "enable TLS (and set cert_file/key_file for mutual TLS)"
            )
        return self
