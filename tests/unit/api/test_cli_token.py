"""`strategy-worker token` prints a token the API's verifier accepts (development keys)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strategy_worker.auth import Principal, Role, token_verifier_from
from strategy_worker.cli import app
from strategy_worker.config_loader import load_config

USER = "660e8400-e29b-41d4-a716-446655440000"


def test_the_printed_token_verifies_with_its_user_and_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_DEV_KEY_DIR", str(tmp_path))
    monkeypatch.delenv("CONFIG_PATH", raising=False)

    result = CliRunner().invoke(app, ["token", "--user", USER, "--operator", "--ttl", "5m"])

    assert result.exit_code == 0, result.output
    verified = token_verifier_from(load_config(env={})).verify(
        result.output.strip(), now=datetime.now(UTC)
    )
    assert verified == Principal(uuid.UUID(USER), Role.OPERATOR)


def test_outside_development_it_refuses_without_a_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")

    result = CliRunner().invoke(app, ["token", "--user", USER])

    assert result.exit_code == 2
    assert "identity provider" in result.output
