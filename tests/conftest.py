"""Shared pytest wiring: every test under tests/integration is marked `integration`.

The marker lets a run pick or drop the tests that need the real servers of scripts/services.sh:
`pytest -m "not integration"` runs without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
