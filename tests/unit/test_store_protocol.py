"""Both stores, and the simulation's mirror of the two, implement every method of the
`Store` protocol with its exact parameters (mypy's structural check alone missed a
PostgresStore method once, so this looks itself)."""

from __future__ import annotations

import inspect

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import Store
from strategy_worker.testing.memory_store import MemoryStore
from strategy_worker.testing.simulation.postgres_mirror import MirrorStore

MEMBERS = [
    name
    for name, value in inspect.getmembers(Store, inspect.isfunction)
    if not name.startswith("_")
]


@pytest.mark.parametrize(
    "store", [PostgresStore, MemoryStore, MirrorStore], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("name", MEMBERS)
def test_the_store_implements_the_protocol_method_with_its_parameters(
    store: type, name: str
) -> None:
    implementation = getattr(store, name, None)
    assert implementation is not None, f"{store.__name__} lacks {name}"
    expected = [
        (p.name, p.kind) for p in inspect.signature(getattr(Store, name)).parameters.values()
    ]
    actual = [(p.name, p.kind) for p in inspect.signature(implementation).parameters.values()]
    assert actual == expected
    assert inspect.iscoroutinefunction(implementation) == inspect.iscoroutinefunction(
        getattr(Store, name)
    )
