"""The README's two commands are the ones CI and the tests run, so they cannot rot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _first_block_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_top_block_when_read_then_has_exactly_the_run_and_test_commands() -> None:
    assert _first_block_after("## Run it, test it") == ["scripts/paper.sh", "scripts/test.sh"]


def test_ci_run_when_read_then_executes_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[-1] == "exec bash scripts/test.sh"


def test_paper_integration_test_when_read_then_runs_the_readme_run_command() -> None:
    test = (ROOT / "tests/integration/paper/test_paper_command.py").read_text(encoding="utf-8")
    assert 'RUN_COMMAND = "scripts/paper.sh"' in test


def test_readme_script_references_when_checked_then_every_script_exists_and_is_executable() -> None:
    for script in set(re.findall(r"scripts/[a-z_]+\.(?:sh|py)", README)):
        path = ROOT / script
        assert path.is_file(), script
        if script.endswith(".sh"):
            assert path.stat().st_mode & 0o111, f"{script} is not executable"


def test_readme_strategy_worker_commands_when_checked_then_the_cli_has_them() -> None:
    from typer.main import get_command

    from strategy_worker.cli import app

    cli = get_command(app)
    names = set(cli.commands)  # type: ignore[attr-defined]
    for line in re.findall(r"`strategy-worker ([a-z-]+)", README):
        assert line in names, line


def test_compose_file_when_parsed_then_names_every_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert set(compose["services"]) == {"postgres", "kafka", "redis", "oms", "strategy-worker"}
    assert compose["services"]["strategy-worker"]["entrypoint"] == ["strategy-worker"]
    assert compose["services"]["oms"]["command"][0] == "oms-sim"


def test_dockerfile_entrypoint_when_read_then_is_the_console_script_the_tests_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    entry = [ln for ln in dockerfile.splitlines() if ln.startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["strategy-worker"]']
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'strategy-worker = "strategy_worker.cli:main"' in pyproject
    assert shlex.split(dockerfile.split("CMD", 1)[1].strip().strip("[]").replace(",", " ")) == [
        "run"
    ]
