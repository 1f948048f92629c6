"""Configuration: defaults -> YAML -> environment, exact decimals, one-line errors."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest

from strategy_worker.config import WorkerConfig
from strategy_worker.config_loader import load_config, parse_yaml
from strategy_worker.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repo_config_loads_with_the_spec_values() -> None:
    config = load_config(REPO_CONFIG, env={})

    assert config.kafka.bootstrap_servers == "localhost:9092"
    assert config.kafka.consumer_group == "strategy-worker"
    assert config.kafka.topics.approved == "strategy.approved"
    assert config.kafka.topics.execution == "strategy.execution"
    assert config.kafka.topics.control == "strategy.control"
    assert config.kafka.topics.dead_letter == "strategy.approved.dlq"
    assert (config.oms_grpc.host, config.oms_grpc.port, config.oms_grpc.timeout) == (
        "localhost",
        50051,
        5.0,
    )
    assert config.oms_grpc.retry.max_attempts == 3
    assert config.oms_grpc.retry.backoff_ms == 1000
    assert config.risk.max_total_exposure == Decimal("1000000.00")
    assert config.risk.max_position_size == Decimal("0.30")
    assert config.risk.max_daily_loss == Decimal("0.05")
    assert config.risk.max_daily_loss_amount == Decimal("50000.00")
    assert config.risk.stop_loss_buffer == Decimal("0.02")
    assert config.execution.rebalance_interval == 300
    assert config.execution.position_check_interval == 60
    assert config.execution.shutdown_policy == "close"
    assert config.metrics.port == 9091
    assert config.health.port == 8080


def test_repo_config_equals_the_built_in_defaults() -> None:
    # The annotated file documents the defaults; drift between them would mislead operators.
    assert load_config(REPO_CONFIG, env={}) == WorkerConfig()


def test_yaml_floats_are_read_as_exact_decimals_from_their_text() -> None:
    data = parse_yaml("risk:\n  max_total_exposure: 0.1000000000000000055511151231257827\n")

    assert data["risk"]["max_total_exposure"] == Decimal("0.1000000000000000055511151231257827")
    assert isinstance(data["risk"]["max_total_exposure"], Decimal)


def test_money_keeps_its_written_scale() -> None:
    config = load_config(REPO_CONFIG, env={})

    assert str(config.risk.max_daily_loss_amount) == "50000.00"


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "risk:\n  max_position_sise: 0.3\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert str(caught.value) == "config.yaml: risk.max_position_sise: unknown key"


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config.yaml: kafak: unknown key$"):
        load_config(write(tmp_path, "kafak:\n  bootstrap_servers: x\n"), env={})


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("risk:\n  max_position_size: 1.5\n", "risk.max_position_size: must be in (0, 1]"),
        ("risk:\n  max_position_size: 0\n", "risk.max_position_size: must be in (0, 1]"),
        ("risk:\n  max_daily_loss: .nan\n", "risk.max_daily_loss: "),
        ("risk:\n  max_total_exposure: -5\n", "risk.max_total_exposure: "),
        ("risk:\n  max_total_exposure: .inf\n", "risk.max_total_exposure: "),
        ("oms_grpc:\n  port: 70000\n", "oms_grpc.port: "),
        ("oms_grpc:\n  retry:\n    max_attempts: 0\n", "oms_grpc.retry.max_attempts: "),
        ("execution:\n  shutdown_policy: explode\n", "execution.shutdown_policy: "),
        ("execution:\n  heartbeat: 20\n", "execution: heartbeat must be shorter"),
        ("kafka:\n  topics: strategy.approved\n", "kafka.topics: "),
        ("logging:\n  level: LOUD\n", "logging.level: "),
    ],
)
def test_bad_value_is_rejected_with_its_path(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml_text), env={})

    message = str(caught.value)
    assert message.startswith("config.yaml: " + expected)
    assert "\n" not in message


def test_duplicate_yaml_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load_config(write(tmp_path, "metrics:\n  port: 1\n  port: 2\n"), env={})


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid YAML \(line 3\): mapping values"):
        load_config(write(tmp_path, "risk:\n  a: b\n   c: d\n"), env={})


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), env={})


def test_secret_in_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"database.password: secrets come from the environment"):
        load_config(write(tmp_path, "database:\n  password: hunter2\n"), env={})


def test_config_path_from_environment_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "metrics:\n  port: 9999\n")

    config = load_config(env={"CONFIG_PATH": str(path)})

    assert config.metrics.port == 9999


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(env={"CONFIG_PATH": str(tmp_path / "nope.yaml")})


def test_spec_environment_variables_override_the_file() -> None:
    config = load_config(
        REPO_CONFIG,
        env={
            "ENVIRONMENT": "staging",
            "DB_PASSWORD": "pg-secret",
            "REDIS_PASSWORD": "redis-secret",
            "KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092",
            "REDIS_URL": "rediss://cache:6380/1",
            "DATABASE_URL": "postgresql://app@db:5432/aipx",
        },
    )

    assert config.environment == "staging"
    assert config.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert config.redis.password is not None
    assert config.redis.password.get_secret_value() == "redis-secret"
    assert config.redis.connection_url() == "rediss://cache:6380/1"
    assert config.database.dsn() == "postgresql://app:pg-secret@db:5432/aipx"


def test_empty_redis_password_means_none() -> None:
    config = load_config(REPO_CONFIG, env={"REDIS_PASSWORD": ""})

    assert config.redis.password is None


def test_generic_env_override_reaches_nested_keys_as_exact_decimals() -> None:
    config = load_config(
        REPO_CONFIG,
        env={
            "SW__OMS_GRPC__HOST": "oms",
            "SW__OMS_GRPC__RETRY__MAX_ATTEMPTS": "5",
            "SW__RISK__MAX_TOTAL_EXPOSURE": "250000.10",
            "SW__EXECUTION__SHUTDOWN_POLICY": "handover",
        },
    )

    assert config.oms_grpc.host == "oms"
    assert config.oms_grpc.retry.max_attempts == 5
    assert config.risk.max_total_exposure == Decimal("250000.10")
    assert config.execution.shutdown_policy == "handover"


def test_bad_env_override_names_the_variable_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO_CONFIG, env={"SW__RISK__MAX_POSITION_SIZE": "1.5"})

    assert str(caught.value) == (
        "env SW__RISK__MAX_POSITION_SIZE: risk.max_position_size: must be in (0, 1]"
    )


def test_unknown_env_override_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^env SW__RISK__NOPE: risk.nope: unknown key$"):
        load_config(REPO_CONFIG, env={"SW__RISK__NOPE": "1"})


def test_secret_file_is_read_for_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("from-file\n", encoding="utf-8")

    config = load_config(REPO_CONFIG, env={"DB_PASSWORD_FILE": str(secret)})

    assert config.database.password is not None
    assert config.database.password.get_secret_value() == "from-file"


def test_secrets_never_appear_in_repr_or_str() -> None:
    config = load_config(
        REPO_CONFIG,
        env={
            "DB_PASSWORD": "pg-secret",
            "REDIS_PASSWORD": "redis-secret",
            "DATABASE_URL": "postgresql://app:url-secret@db/aipx",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "sasl-secret",
        },
    )

    text = repr(config) + str(config) + config.model_dump_json()
    for secret in ("pg-secret", "redis-secret", "url-secret", "sasl-secret"):
        assert secret not in text


def test_sasl_protocol_without_credentials_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r": kafka: .*sasl.username"):
        load_config(REPO_CONFIG, env={"SW__KAFKA__SECURITY_PROTOCOL": "SASL_SSL"})


def test_error_message_never_echoes_a_bad_secret_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO_CONFIG, env={"SW__DATABASE__PORT": "s3cr3t-looking"})

    assert "s3cr3t-looking" not in str(caught.value)


def test_database_dsn_from_parts_quotes_the_password() -> None:
    config = load_config(REPO_CONFIG, env={"DB_PASSWORD": "p@ss/word"})

    assert (
        config.database.dsn()
        == "postgresql://postgres:p%40ss%2Fword@localhost:5432/aipx?sslmode=prefer"
    )


def test_config_is_frozen() -> None:
    config = WorkerConfig()

    with pytest.raises(Exception, match="frozen"):
        config.metrics.port = 1  # type: ignore[misc]


def _key_paths(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    from pydantic import BaseModel

    paths: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        key = (*prefix, info.alias or name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _key_paths(annotation, key)
        else:
            paths.append(key)
    return paths


# Keys that config.yaml leaves out on purpose: secrets (environment only) and the full URLs
# that stand for host/port/... and usually carry a password (DATABASE_URL, REDIS_URL).
_NOT_IN_YAML = {
    ("database", "password"),
    ("database", "url"),
    ("redis", "password"),
    ("redis", "url"),
    ("kafka", "sasl", "password"),
    # Keys and secrets of the API and of control signing: from the environment only.
    ("api", "auth", "public_key"),
    ("api", "auth", "secret"),
    ("api", "control_signing_key"),
    ("control_auth", "verify_key"),
}


def test_repo_config_lists_every_key_of_the_model() -> None:
    data = parse_yaml(REPO_CONFIG.read_text(encoding="utf-8"))
    missing = []
    for path in _key_paths(WorkerConfig):
        node: object = data
        for part in path:
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError and path not in _NOT_IN_YAML:
            missing.append(".".join(path))
    assert missing == []


def test_worker_stop_loss_trading_day_start_and_bursts_are_risk_keys(tmp_path: Path) -> None:
    # The README's Trading rules name these settings; they used to be refused as unknown.
    path = write(
        tmp_path,
        "risk:\n"
        "  stop_loss_pct: 0.08\n"
        '  trading_day_start: "13:30"\n'
        "  execution_order_burst: 40\n"
        "  worker_order_burst: 400\n",
    )

    config = load_config(path, env={})

    assert config.risk.stop_loss_pct == Decimal("0.08")
    assert config.risk.trading_day_start == time(13, 30)
    assert (config.risk.execution_order_burst, config.risk.worker_order_burst) == (40, 400)


def test_default_bursts_are_the_documented_ones() -> None:
    assert (WorkerConfig().risk.execution_order_burst, WorkerConfig().risk.worker_order_burst) == (
        100,
        200,
    )
    assert WorkerConfig().risk.stop_loss_pct is None


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("risk:\n  trading_day_start: 13:30\n", "risk.trading_day_start: write the time"),
        ('risk:\n  trading_day_start: "25:00"\n', "risk.trading_day_start: "),
        ('risk:\n  trading_day_start: "13:30+02:00"\n', "risk.trading_day_start: "),
        ("risk:\n  stop_loss_pct: 0.6\n", "risk.stop_loss_pct: "),
        ("risk:\n  stop_loss_pct: 0\n", "risk.stop_loss_pct: "),
        ("risk:\n  worker_order_burst: 0\n", "risk.worker_order_burst: "),
    ],
)
def test_bad_risk_setting_is_rejected_with_its_path(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml_text), env={})

    assert str(caught.value).startswith("config.yaml: " + expected)


_TLS_EVERYWHERE = {
    "SW__KAFKA__SECURITY_PROTOCOL": "SSL",
    "SW__OMS_GRPC__TLS__ENABLED": "true",
}


@pytest.mark.parametrize(
    ("environment", "development", "production"),
    [("development", True, False), ("staging", False, False), ("production", False, True)],
)
def test_environment_names_the_deployment_kind(
    environment: str, development: bool, production: bool
) -> None:
    config = load_config(REPO_CONFIG, env={"ENVIRONMENT": environment, **_TLS_EVERYWHERE})

    assert config.environment == environment
    assert (config.is_development, config.is_production) == (development, production)


def test_unknown_environment_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^env ENVIRONMENT: environment: "):
        load_config(REPO_CONFIG, env={"ENVIRONMENT": "prod"})


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"SW__KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"}, "kafka.security_protocol PLAINTEXT"),
        (
            {
                "SW__KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "svc",
                "KAFKA_SASL_PASSWORD": "pw",
            },
            "kafka.security_protocol SASL_PLAINTEXT",
        ),
        ({"SW__OMS_GRPC__TLS__ENABLED": "false"}, "oms_grpc.tls.enabled false"),
    ],
)
def test_production_refuses_plaintext_transport(override: dict[str, str], named: str) -> None:
    # The spec: "Enable TLS for gRPC and Kafka connections in production". It used to be a
    # label that changed nothing.
    with pytest.raises(ConfigError) as caught:
        load_config(REPO_CONFIG, env={"ENVIRONMENT": "production", **_TLS_EVERYWHERE, **override})

    assert named in str(caught.value)
    assert "production" in str(caught.value)


def test_staging_accepts_plaintext_transport() -> None:
    config = load_config(REPO_CONFIG, env={"ENVIRONMENT": "staging"})

    assert config.kafka.security_protocol == "PLAINTEXT"


def test_retention_windows_are_configurable_and_must_be_ordered(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "retention:\n  snapshots_fine: 3600\n  snapshots_hourly: 86400\n"),
        env={},
    )

    assert (config.retention.snapshots_fine, config.retention.snapshots_hourly) == (3600, 86400)
    with pytest.raises(ConfigError, match="snapshots_hourly must be longer than snapshots_fine"):
        load_config(write(tmp_path, "retention:\n  snapshots_hourly: 60\n"), env={})
