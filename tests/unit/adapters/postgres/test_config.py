"""DatabaseConfig: the database section of config.yaml plus the environment."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from strategy_worker.adapters.postgres.config import DatabaseConfig, describe_dsn

ROOT = Path(__file__).resolve().parents[4]


def test_config_yaml_database_section_is_accepted_as_is() -> None:
    section = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["database"]

    config = DatabaseConfig.from_env(section, environ={})

    assert (config.host, config.port, config.name) == ("localhost", 5432, "aipx")
    assert (config.pool_min_size, config.pool_max_size) == (2, 10)


def test_unknown_key_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="pool_size"):
        DatabaseConfig.model_validate({"pool_size": 5})


def test_pool_min_above_max_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="pool_min_size"):
        DatabaseConfig(pool_min_size=5, pool_max_size=2)


def test_config_is_frozen() -> None:
    config = DatabaseConfig()

    with pytest.raises(pydantic.ValidationError):
        config.port = 1  # type: ignore[misc]


def test_database_url_from_env_wins_over_host_and_port() -> None:
    config = DatabaseConfig.from_env(
        {"host": "db.internal"}, environ={"DATABASE_URL": "postgresql://u:p@10.0.0.5:6543/x"}
    )

    assert config.dsn() == "postgresql://u:p@10.0.0.5:6543/x"
    assert config.where() == "10.0.0.5:6543"
    assert "DATABASE_URL" in config.setting_hint()


def test_password_comes_from_db_password_and_is_quoted_into_the_dsn() -> None:
    config = DatabaseConfig.from_env({"user": "sw"}, environ={"DB_PASSWORD": "p@ss:w/rd"})

    assert config.dsn().startswith("postgresql://sw:p%40ss%3Aw%2Frd@localhost:5432/aipx?")
    assert "sslmode=prefer" in config.dsn()


def test_password_file_is_read_when_db_password_is_absent(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")

    config = DatabaseConfig.from_env({}, environ={"DB_PASSWORD_FILE": str(secret)})

    assert config.password is not None
    assert config.password.get_secret_value() == "from-file"


def test_secrets_never_show_in_repr() -> None:
    config = DatabaseConfig(url="postgresql://u:topsecret@h/db", password="alsosecret")

    assert "topsecret" not in repr(config)
    assert "alsosecret" not in repr(config)
    assert "topsecret" not in config.where()


def test_tls_files_go_into_the_dsn_and_must_come_in_pairs() -> None:
    config = DatabaseConfig(
        sslmode="verify-full",
        sslrootcert=Path("/etc/ca.pem"),
        sslcert=Path("/etc/c.pem"),
        sslkey=Path("/etc/k.pem"),
    )

    assert "sslmode=verify-full" in config.dsn()
    assert "sslrootcert=%2Fetc%2Fca.pem" in config.dsn()
    with pytest.raises(pydantic.ValidationError, match="sslkey"):
        DatabaseConfig(sslcert=Path("/etc/c.pem"))


def test_non_postgres_url_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="postgresql://"):
        DatabaseConfig(url="mysql://h/db")


@pytest.mark.parametrize(
    ("dsn", "where"),
    [
        ("postgresql://u:p@db:5433/x", "db:5433"),
        ("postgresql://u@db/x", "db:5432"),
        ("postgresql:///x?host=/run/postgresql&port=5444", "/run/postgresql:5444"),
        ("postgresql://[::1]:6000/x", "::1:6000"),
    ],
)
def test_describe_dsn_names_host_and_port_only(dsn: str, where: str) -> None:
    assert describe_dsn(dsn) == where
