"""PostgreSQL restarted under a live store: retryable errors while down, nothing lost after.

Runs on a private PostgreSQL of its own (`fault_postgres`), so stopping it never disturbs
the shared server other tests use.
"""

from __future__ import annotations

import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.errors import StoreError
from strategy_worker.store import CommitOutcome, FillRecord

from ..servers import PostgresControl
from .factories import create, fill, intent, new_execution, step

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_url(fault_postgres: PostgresControl) -> str:
    """This module's databases live on the private server that the test stops."""
    return fault_postgres.url


async def test_store_reports_retryable_errors_while_down_and_recovers_after_restart(
    store: PostgresStore, postgres_control: PostgresControl
) -> None:
    execution = new_execution()
    order = intent(execution.execution_id, 1)
    record = await create(store, execution, intents=[order])
    late_fill = FillRecord(fill=fill(order, 1, quantity="200", price="175.5"), oms_seq=1)
    write = step(record, fills=[late_fill])

    await postgres_control.astop()
    try:
        with pytest.raises(StoreError) as caught:
            await store.commit([write], cursor=("oms", 1))
        assert caught.value.retryable is True
        with pytest.raises(StoreError) as claimed:
            await store.claim_outbox(limit=10)
        assert claimed.value.retryable is True
        assert await store.ping() is False
    finally:
        await postgres_control.astart()

    # The pool replaces its dead connections; a retry of the same batch succeeds, once.
    outcome: CommitOutcome | None = None
    errors: list[StoreError] = []
    for _ in range(3):
        try:
            outcome = await store.commit([write], cursor=("oms", 1))
            break
        except StoreError as exc:
            errors.append(exc)
    assert all(e.retryable for e in errors)
    assert outcome is not None
    assert outcome.lost == frozenset()
    assert await store.get_fills(execution.execution_id) == [late_fill]
    assert await store.get_report_cursor("oms") == 1
    assert await store.claim_outbox(limit=10) == []  # leads again, on a new session
