"""Paper mode's pure helpers: reading strategy files and durations."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from strategy_worker.cli import parse_duration
from strategy_worker.paper.app import read_messages


def test_read_messages_when_file_holds_one_document_then_one_message(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text('{\n  "type": "strategy.approved",\n  "x": 1\n}\n', encoding="utf-8")
    assert read_messages([path]) == [(path.read_bytes().strip(), str(path))]


def test_read_messages_when_json_lines_then_one_message_per_line(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\nnot json\n', encoding="utf-8")
    assert read_messages([path]) == [
        (b'{"a": 1}', f"{path}:1"),
        (b'{"b": 2}', f"{path}:3"),
        (b"not json", f"{path}:4"),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("5h", 18000.0)]
)
def test_parse_duration_when_valid_then_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_when_garbage_then_bad_parameter() -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration("five hours")
