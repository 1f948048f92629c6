"""The `strategy-worker` command line: what `run` and `db migrate` read before starting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from strategy_worker import cli
from strategy_worker.config import WorkerConfig


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[WorkerConfig]:
    """Configs `run` would start the worker with (the worker itself is not started)."""
    configs: list[WorkerConfig] = []

    async def run_worker(config: WorkerConfig) -> int:
        configs.append(config)
        return 0

    import strategy_worker.runtime.app as runtime_app

    monkeypatch.setattr(runtime_app, "run_worker", run_worker)
    monkeypatch.setattr(cli, "_configure_logging", lambda *_a, **_k: None)
    return configs


def _invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, **env: Any) -> Any:
    monkeypatch.chdir(tmp_path)
    for name in ("CONFIG_PATH", "SW__METRICS__PORT", "DB_PASSWORD", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner().invoke(cli.app, list(args), env=env or None)


def test_run_reads_the_dotenv_file_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[WorkerConfig]
) -> None:
    # The spec's set-up creates a .env (ENVIRONMENT, DB_PASSWORD, CONFIG_PATH ...).
    (tmp_path / ".env").write_text(
        "ENVIRONMENT=staging\nDB_PASSWORD=from-dotenv\nSW__METRICS__PORT=9555\n",
        encoding="utf-8",
    )

    result = _invoke(tmp_path, monkeypatch, "run")

    assert result.exit_code == 0, result.output
    (config,) = started
    assert config.environment == "staging"
    assert config.metrics.port == 9555
    assert config.database.password is not None
    assert config.database.password.get_secret_value() == "from-dotenv"


def test_run_prefers_the_process_environment_over_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[WorkerConfig]
) -> None:
    (tmp_path / ".env").write_text("SW__METRICS__PORT=9555\n", encoding="utf-8")

    result = _invoke(tmp_path, monkeypatch, "run", SW__METRICS__PORT="9666")

    assert result.exit_code == 0, result.output
    assert started[0].metrics.port == 9666


def test_run_reads_config_path_from_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[WorkerConfig]
) -> None:
    (tmp_path / "worker.yaml").write_text("metrics:\n  port: 9777\n", encoding="utf-8")
    (tmp_path / ".env").write_text("CONFIG_PATH=./worker.yaml\n", encoding="utf-8")

    result = _invoke(tmp_path, monkeypatch, "run")

    assert result.exit_code == 0, result.output
    assert started[0].metrics.port == 9777


def test_bad_value_in_the_dotenv_file_is_named_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[WorkerConfig]
) -> None:
    (tmp_path / ".env").write_text("SW__METRICS__PORT=99999\n", encoding="utf-8")

    result = _invoke(tmp_path, monkeypatch, "run")

    assert result.exit_code == 2
    assert ".env SW__METRICS__PORT: metrics.port: " in result.output
    assert started == []


def test_named_env_file_must_exist_but_a_missing_default_one_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[WorkerConfig]
) -> None:
    assert _invoke(tmp_path, monkeypatch, "run").exit_code == 0

    result = _invoke(tmp_path, monkeypatch, "run", "--env-file", "prod.env")

    assert result.exit_code == 2
    assert "prod.env: env file not found" in result.output
