"""Migration discovery and planning (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from strategy_worker.adapters.postgres.errors import MigrationError
from strategy_worker.adapters.postgres.migrate import MIGRATIONS_DIR, discover, plan

ROOT = Path(__file__).resolve().parents[4]


def test_top_level_migrations_are_the_packaged_files_byte_for_byte() -> None:
    top = sorted((ROOT / "migrations").glob("*.sql"))
    packaged = sorted(MIGRATIONS_DIR.glob("*.sql"))

    assert [p.name for p in top] == [p.name for p in packaged]
    assert [p.read_bytes() for p in top] == [p.read_bytes() for p in packaged]


def test_spec_path_exists() -> None:
    assert (ROOT / "migrations" / "001_strategy_worker.sql").is_file()


def test_packaged_migrations_are_found_in_version_order() -> None:
    migrations = discover()

    assert migrations[0].version == "001"
    assert migrations[0].name == "strategy_worker"
    assert len(migrations[0].checksum) == 64


def test_versions_sort_numerically(tmp_path: Path) -> None:
    for name in ("010_c.sql", "002_b.sql", "001_a.sql"):
        (tmp_path / name).write_text("SELECT 1;")

    assert [m.version for m in discover(tmp_path)] == ["001", "002", "010"]


@pytest.mark.parametrize("name", ["1_short.sql", "001-dash.sql", "001_Upper.sql"])
def test_badly_named_files_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        discover(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 2;")

    with pytest.raises(MigrationError, match="share version 001"):
        discover(tmp_path)


def test_plan_returns_only_pending_and_checks_applied_checksums(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "002_b.sql").write_text("SELECT 2;")
    first, second = discover(tmp_path)

    assert plan([first, second], {"001": first.checksum}) == [second]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        plan([first, second], {"001": "0" * 64})
    with pytest.raises(MigrationError, match="003 unknown"):
        plan([first, second], {"003": "x"})


def test_missing_directory_is_a_migration_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nope")
