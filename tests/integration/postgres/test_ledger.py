"""The risk ledger on the real PostgreSQL: totals move with the commits that record the
executions' exposure, a commit with new buys past a cap is refused whole, two stores
committing at once never pass the cap, and the audit repairs a drift."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.store import FLEET, ExecutionWrite, LedgerCaps, LedgerRefusedError, MarkWrite

from .factories import commit_one, creation, intent, new_execution, step

pytestmark = pytest.mark.integration


async def _fleet(store: PostgresStore) -> Decimal:
    return (await store.ledger_totals([]))[FLEET]


async def test_commits_move_the_fleet_and_the_user_totals_by_the_exposure_they_record(
    store: PostgresStore,
) -> None:
    start = await _fleet(store)
    execution = new_execution()
    first = intent(execution.execution_id, 1, quantity="100", price="100")
    write = _with(creation(execution, intents=[first], next_intent_seq=2), Decimal(10000))
    outcome = await store.commit([write], caps=LedgerCaps(fleet=start + Decimal(10000)))
    assert outcome.created == {execution.execution_id}
    assert outcome.ledger[FLEET] == start + 10000
    totals = await store.ledger_totals([execution.user_id])
    assert totals[("user", str(execution.user_id))] == Decimal(10000)

    record = await store.get_execution(execution.execution_id)
    assert record is not None
    assert record.ledger_exposure == 10000
    # A fill at a lower price: the exposure falls; no new buy, so no cap applies.
    record = await commit_one(store, _with(step(record), Decimal(9500), buys=False))
    assert record.ledger_exposure == 9500
    assert await _fleet(store) == start + 9500
    # Quiet marks move it too.
    missed = await store.record_marks(
        [
            MarkWrite(
                execution_id=record.execution_id,
                fence=record.fence,  # type: ignore[arg-type]
                version=record.version,
                unrealized_pnl=Decimal(0),
                total_pnl=Decimal(0),
                exposure=Decimal(9900),
                marks={"AAPL": Decimal(99)},
            )
        ]
    )
    assert missed == set()
    assert await _fleet(store) == start + 9900


async def test_new_buys_past_the_cap_refuse_the_whole_commit(store: PostgresStore) -> None:
    start = await _fleet(store)
    first, second = new_execution(), new_execution()
    writes = [
        _with(
            creation(first, intents=[intent(first.execution_id, 1)], next_intent_seq=2),
            Decimal(6000),
        ),
        _with(
            creation(second, intents=[intent(second.execution_id, 1)], next_intent_seq=2),
            Decimal(6000),
        ),
    ]

    with pytest.raises(LedgerRefusedError) as refused:
        await store.commit(writes, caps=LedgerCaps(fleet=start + Decimal(10000)))

    assert refused.value.exposure == start
    assert await store.existing_executions([first.execution_id, second.execution_id]) == set()
    assert await _fleet(store) == start


async def test_two_stores_committing_buys_at_once_never_pass_the_cap(
    store: PostgresStore, other_store: PostgresStore, migrated_dsn: str
) -> None:
    start = await _fleet(store)
    cap = start + Decimal(50000)
    accepted: list[Decimal] = []

    async def buyer(chosen: PostgresStore) -> None:
        for _ in range(10):
            execution = new_execution()
            write = _with(
                creation(execution, intents=[intent(execution.execution_id, 1)], next_intent_seq=2),
                Decimal(4000),
            )
            try:
                await chosen.commit([write], caps=LedgerCaps(fleet=cap))
            except LedgerRefusedError:
                continue
            accepted.append(Decimal(4000))

    await asyncio.gather(buyer(store), buyer(other_store))

    conn = await asyncpg.connect(migrated_dsn)
    try:
        fleet = await conn.fetchval(
            "SELECT exposure FROM risk_ledger WHERE scope = 'fleet' AND scope_key = ''"
        )
        held = await conn.fetchval("SELECT sum(ledger_exposure) FROM strategy_executions")
    finally:
        await conn.close()
    assert sum(accepted) == Decimal(48000)  # 12 of the 20 fit under 50,000
    assert fleet <= cap
    assert fleet == held


async def test_the_audit_recomputes_and_repairs_a_drifted_ledger(
    store: PostgresStore, migrated_dsn: str
) -> None:
    # The earlier tests wrote exposures by hand (not what their intents give): the first
    # audit repairs those, execution by execution, to what orders and positions say.
    first = await store.audit_ledger()
    assert first.repaired
    assert Decimal("35100.0") in {new for _, new in first.repaired.values()}  # 200 @ 175.5
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute("UPDATE risk_ledger SET exposure = exposure + 777 WHERE scope = 'fleet'")
        audit = await store.audit_ledger()
        again = await store.audit_ledger()
        fleet = await conn.fetchval(
            "SELECT exposure FROM risk_ledger WHERE scope = 'fleet' AND scope_key = ''"
        )
        held = await conn.fetchval("SELECT sum(ledger_exposure) FROM strategy_executions")
    finally:
        await conn.close()
    assert audit.difference == 777
    assert audit.repaired == {}
    assert again.difference == 0
    assert fleet == held


def _with(write: ExecutionWrite, exposure: Decimal, *, buys: bool = True) -> ExecutionWrite:
    """The write carrying the execution's exposure (all of it new buys, or none)."""
    return dataclasses.replace(write, exposure=exposure, new_buys=exposure if buys else Decimal(0))
