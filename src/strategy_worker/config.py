"""The worker's configuration: one frozen, validated object built once at startup.

Load order: model defaults -> YAML at `CONFIG_PATH` (default ./config/config.yaml) ->
environment. YAML numbers become `Decimal` through their text (never through float), unknown
keys are errors, and every error is one line naming where it came from and the key path:
``config.yaml: risk.max_position_size: must be in (0, 1]``.

Secrets (database, Redis and Kafka SASL passwords) come only from the environment or from a
file named by ``<VAR>_FILE``; a secret in the YAML is refused, so it never lands in git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from strategy_worker.adapters.oms_grpc.config import OmsClientConfig
from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("./config/config.yaml")
ENV_PREFIX = "SW__"


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
    #: Larger payloads are dead-lettered unread (hostile input must not exhaust memory).
    max_message_bytes: int = Field(default=1_048_576, gt=0)
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
    max_position_size: Decimal = Decimal("0.30")
    max_daily_loss: Decimal = Decimal("0.05")
    max_daily_loss_amount: PositiveDecimal = Decimal("50000.00")
    min_order_value: PositiveDecimal = Decimal("100.00")
    max_order_value: PositiveDecimal = Decimal("100000.00")
    #: A WARNING risk event at this fraction of a limit (24% of a 30% position limit).
    warning_ratio: Decimal = Decimal("0.80")
    #: Stop-loss trigger buffer against whipsaws.
    stop_loss_buffer: Decimal = Decimal("0.02")
    #: Order rate limits: per execution per minute, and for the whole worker per second.
    max_orders_per_minute: int = Field(default=120, ge=1)
    max_orders_per_second: int = Field(default=50, ge=1)

    _ratios = field_validator(
        "max_position_size", "max_daily_loss", "warning_ratio", "stop_loss_buffer"
    )(_ratio)

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
    """The one reading of `environment` this module makes: development relaxes defaults."""
    return environment.strip().lower() in {"development", "dev", "local"}


class WorkerConfig(_Section):
    """Everything the worker reads at startup; see config/config.yaml for the annotated file."""

    environment: str = "development"
    #: Identifies this worker in leases and logs; defaults to hostname-pid at runtime.
    worker_id: str | None = None
    kafka: KafkaConfig = KafkaConfig()
    oms_grpc: OmsClientConfig = OmsClientConfig()
    risk: RiskSection = RiskSection()
    execution: ExecutionSection = ExecutionSection()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisSection = RedisSection()
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


# --------------------------------------------------------------------------- loading

# Plain environment variables of the spec and the service harness -> key path.
_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "ENVIRONMENT": ("environment",),
    "WORKER_ID": ("worker_id",),
    "DB_PASSWORD": ("database", "password"),
    "DATABASE_URL": ("database", "url"),
    "REDIS_PASSWORD": ("redis", "password"),
    "REDIS_URL": ("redis", "url"),
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "KAFKA_SASL_USERNAME": ("kafka", "sasl", "username"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl", "password"),
    "API_JWT_SECRET": ("api", "auth", "secret"),
    "API_JWT_PUBLIC_KEY": ("api", "auth", "public_key"),
    "API_CONTROL_SIGNING_KEY": ("api", "control_signing_key"),
    "CONTROL_VERIFY_KEY": ("control_auth", "verify_key"),
}
# Secrets may also come from a file named by <VAR>_FILE (container secret mounts).
_SECRET_ENV = (
    "DB_PASSWORD",
    "REDIS_PASSWORD",
    "KAFKA_SASL_PASSWORD",
    "DATABASE_URL",
    "REDIS_URL",
    "API_JWT_SECRET",
    "API_JWT_PUBLIC_KEY",
    "API_CONTROL_SIGNING_KEY",
    "CONTROL_VERIFY_KEY",
)
# Keys that must never be written in the YAML file.
_SECRET_PATHS = frozenset(
    {
        ("database", "password"),
        ("redis", "password"),
        ("kafka", "sasl", "password"),
        ("api", "auth", "secret"),
        ("api", "control_signing_key"),
    }
)


class _DecimalLoader(yaml.SafeLoader):
    """YAML SafeLoader that reads floats as Decimal from their text and rejects duplicate keys."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "").strip()
    lowered = text.lower()
    if lowered in {".nan", ".inf", "+.inf", "-.inf"}:
        return Decimal("NaN")  # validation rejects it with the key's path
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the resolver only matches numbers
        raise yaml.constructor.ConstructorError(None, None, f"bad number {text!r}") from exc


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node)
    return result


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_DecimalLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, *, source: str = "config.yaml") -> dict[str, Any]:
    """Parse config YAML with Decimal numbers; an empty document is an empty mapping."""
    try:
        data = yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1})"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> WorkerConfig:
    """Build the worker's config: defaults -> YAML -> environment; ConfigError names the key.

    `path` wins over CONFIG_PATH; a missing file is an error only when named explicitly
    (by `path` or CONFIG_PATH), so the defaults alone give a runnable local config.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    explicit = path is not None or "CONFIG_PATH" in environ
    config_path = (
        path if path is not None else Path(environ.get("CONFIG_PATH", DEFAULT_CONFIG_PATH))
    )
    source = config_path.name
    data: dict[str, Any] = {}
    if config_path.is_file():
        try:
            text = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path}: cannot read: {exc.__class__.__name__}") from None
        data = parse_yaml(text, source=source)
        for secret in _SECRET_PATHS:
            if _get_path(data, secret) is not None:
                raise ConfigError(
                    f"{source}: {'.'.join(secret)}: secrets come from the environment "
                    "(or a *_FILE), never from the config file"
                )
    elif explicit:
        raise ConfigError(f"{config_path}: config file not found")

    origins: dict[tuple[str, ...], str] = {}
    for key_path, value, origin in _env_overrides(environ):
        _set_path(data, key_path, value, origin)
        origins[key_path] = origin
    try:
        return WorkerConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_one_line(exc, source, origins)) from None


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[tuple[str, ...], object, str]]:
    overrides: list[tuple[tuple[str, ...], object, str]] = []
    for name, key_path in _ENV_KEYS.items():
        value: str | None = environ.get(name)
        origin = f"env {name}"
        file_name = environ.get(f"{name}_FILE") if name in _SECRET_ENV else None
        if file_name:
            origin = f"env {name}_FILE"
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{origin}: cannot read: {exc.__class__.__name__}") from None
        if value is None:
            continue
        if value == "" and name in _SECRET_ENV:
            continue  # the spec's `REDIS_PASSWORD=` means "no password"
        overrides.append((key_path, value, origin))
    # Generic SW__SECTION__KEY[__SUB] overrides come last: they are the most specific.
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key_path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            if any(not part for part in key_path):
                raise ConfigError(f"env {name}: malformed variable name")
            overrides.append((key_path, environ[name], f"env {name}"))
    return overrides


def _get_path(data: Mapping[str, Any], key_path: tuple[str, ...]) -> object:
    node: object = data
    for part in key_path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: object, origin: str) -> None:
    node = data
    for depth, part in enumerate(key_path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(key_path[: depth + 1])
            raise ConfigError(f"{origin}: {where}: is not a section")
        node = child
    node[key_path[-1]] = value


_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def _one_line(
    exc: pydantic.ValidationError, source: str, origins: Mapping[tuple[str, ...], str]
) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = tuple(str(part) for part in first["loc"])
    origin = source
    unknown = first["type"] == "extra_forbidden"
    for key_path, env_origin in origins.items():
        # An error under an env-set key came from it; an unknown key may be the env's prefix.
        if loc[: len(key_path)] == key_path or (unknown and key_path[: len(loc)] == loc):
            origin = env_origin
            break
    message = "unknown key" if unknown else first["msg"]
    message = _PYDANTIC_PREFIX.sub("", message)
    path = ".".join(loc) if loc else "(root)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{origin}: {path}: {message}{more}"
