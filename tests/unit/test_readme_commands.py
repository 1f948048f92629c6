"""The README's two commands are the ones CI and the tests run, so they cannot rot."""

from __future__ import annotations

import re
import shlex
from datetime import time
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


# --------------------------------------------------------------------------- config docs


def _config_table() -> list[tuple[list[str], str]]:
    """(sections, keys cell) of every row of the README's Configuration table."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        rows.append((re.findall(r"`([a-z_]+)`", cells[0]), cells[1]))
    return rows


def _documented_keys(cell: str) -> list[tuple[tuple[str, ...], str | None]]:
    """Key paths named in a table cell, each with the default written after it (or None)."""
    found: list[tuple[tuple[str, ...], str | None]] = []
    for match in re.finditer(r"`([a-z_][a-z0-9_.*/]*)`(?:\s*\(([^)]*)\))?", cell):
        token, default = match.group(1), match.group(2)
        head, _, tail = token.rpartition(".")
        alternatives = tail.split("/")
        for name in alternatives:
            path = (*head.split("."), name) if head else (name,)
            found.append((path, default if len(alternatives) == 1 else None))
    return found


def _field(model: type, path: tuple[str, ...]) -> object:
    """The default of a config key (a section's default instance for `*`), or KeyError."""
    from pydantic import BaseModel

    node: object = model()
    for part in path:
        if part == "*" and isinstance(node, BaseModel):
            return node
        if not isinstance(node, BaseModel):
            raise KeyError(path)
        fields = type(node).model_fields
        by_alias = {f.alias: name for name, f in fields.items() if f.alias}
        name = by_alias.get(part, part)
        if name not in fields:
            raise KeyError(path)
        node = getattr(node, name)
    return node


def _same_default(written: str, actual: object) -> bool:
    from decimal import Decimal, InvalidOperation

    written = written.replace("\\|", "|").strip()
    if written == str(actual):
        return True
    first = re.split(r"[\s;,]", written, maxsplit=1)[0].rstrip(":")
    if actual is None:
        return first in {"null", "none", "off"}
    if isinstance(actual, bool):
        return first == str(actual).lower()
    if isinstance(actual, tuple | list):
        return first in {"[]", "none"} if not actual else first == str(list(actual))
    if isinstance(actual, time):
        return time.fromisoformat(first.strip('"')) == actual
    try:
        return Decimal(first) == Decimal(str(actual))
    except InvalidOperation:
        return first == str(actual)


def test_readme_config_table_when_checked_then_names_only_known_keys_with_their_defaults() -> None:
    from strategy_worker.config import WorkerConfig

    rows = _config_table()
    assert rows, "the Configuration table was not found"
    for sections, cell in rows:
        for path, default in _documented_keys(cell):
            candidates = []
            for section in sections:
                try:
                    candidates.append(_field(WorkerConfig, (section, *path)))
                except KeyError:
                    continue
            assert candidates, f"README documents {'/'.join(sections)}.{'.'.join(path)}: unknown"
            # A default in parentheses (not an environment variable's name) must be the code's.
            written = default is not None and not re.match(r"^[A-Z_]+$", default.split()[0])
            if written and default is not None and len(sections) == 1:
                assert _same_default(default, candidates[0]), (
                    f"README says {sections[0]}.{'.'.join(path)} defaults to {default!r}, "
                    f"the code to {candidates[0]!r}"
                )


def test_readme_trading_rules_settings_when_checked_then_each_is_a_config_key() -> None:
    from strategy_worker.config import WorkerConfig

    rules = README.split("## Trading rules", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"(?<![*\w])\*([a-z]+(?:_[a-z]+)+)\*(?![*\w])", rules))
    assert names, "no settings in italics found under Trading rules"
    sections = ("risk", "execution")
    for name in sorted(names):
        known = []
        for section in sections:
            try:
                known.append(_field(WorkerConfig, (section, name)))
            except KeyError:
                continue
        assert known, f"Trading rules name *{name}*, which is no risk/execution config key"
