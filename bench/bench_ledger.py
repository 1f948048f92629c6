"""What the risk ledger costs the hot path: `Store.commit` throughput with and without it,
side by side in one run (issue 13).

Two populations of executions in one fresh database; each round commits, for every
execution, one step that records a new BUY intent (the write every order begins with), in
batches as the engine commits them. The *ledger* population's writes carry their exposure
and new buys under fleet and user caps (the ledger rows move and the cap check runs, in the
same transaction); the *plain* one's carry none. Rounds alternate between the two, so
machine noise falls on both; the ratio ledger/plain is the cost.

    .venv/bin/python bench/bench_ledger.py               # DATABASE_URL from .services/env
    .venv/bin/python bench/bench_ledger.py --executions 4000 --batch 200 --rounds 12
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore, migrate
from strategy_worker.domain.ids import client_order_id, execution_id_for
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    FIRST_VERSION,
    FLEET,
    ExecutionState,
    ExecutionWrite,
    Fence,
    LedgerCaps,
    NewExecution,
)
from strategy_worker.testing.databases import scratch_database

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
OWNER = "bench"
FENCE = Fence(owner_id=OWNER, epoch=FIRST_LEASE_EPOCH)
NOTIONAL = Decimal("1755.00")  # 10 x 175.50 per step
CAPS = LedgerCaps(fleet=Decimal("1e15"), user=Decimal("1e14"))


@dataclasses.dataclass
class Population:
    name: str
    ledger: bool
    ids: list[uuid.UUID]
    users: list[uuid.UUID]
    version: dict[uuid.UUID, int]
    seq: dict[uuid.UUID, int]
    exposure: dict[uuid.UUID, Decimal]


def _new(n: int, users: list[uuid.UUID]) -> tuple[NewExecution, uuid.UUID]:
    strategy = uuid.uuid4()
    user = users[n % len(users)]
    capital = Decimal("100000000.00")
    execution = NewExecution(
        execution_id=execution_id_for(strategy, T0),
        strategy_id=strategy,
        user_id=user,
        approved_at=T0,
        config={"name": "bench", "allocation": {"AAPL": "0.3"}},
        initial_capital=capital,
        started_at=T0 + timedelta(seconds=1),
        state=ExecutionState.initial(capital),
    )
    return execution, user


def _intent(execution_id: uuid.UUID, seq: int) -> OrderIntent:
    return OrderIntent(
        client_order_id=client_order_id(execution_id, seq),
        execution_id=execution_id,
        intent_seq=seq,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(10),
        price=Decimal("175.50"),
        purpose=OrderPurpose.REBALANCE,
    )


async def _populate(store: PostgresStore, pop: Population, count: int, batch: int) -> None:
    writes: list[ExecutionWrite] = []
    for n in range(count):
        execution, _ = _new(n, pop.users)
        pop.ids.append(execution.execution_id)
        pop.version[execution.execution_id] = FIRST_VERSION
        pop.seq[execution.execution_id] = 1
        pop.exposure[execution.execution_id] = Decimal(0)
        writes.append(
            ExecutionWrite(
                execution_id=execution.execution_id,
                fence=FENCE,
                version=FIRST_VERSION,
                create=execution,
                next_intent_seq=1,
                exposure=Decimal(0) if pop.ledger else None,
            )
        )
        if len(writes) == batch:
            await store.commit(writes)
            writes = []
    if writes:
        await store.commit(writes)


def _step(pop: Population, execution_id: uuid.UUID) -> ExecutionWrite:
    seq = pop.seq[execution_id]
    version = pop.version[execution_id] + 1
    pop.seq[execution_id] = seq + 1
    pop.version[execution_id] = version
    write = ExecutionWrite(
        execution_id=execution_id,
        fence=FENCE,
        version=version,
        intents=[_intent(execution_id, seq)],
        next_intent_seq=seq + 1,
    )
    if not pop.ledger:
        return write
    pop.exposure[execution_id] += NOTIONAL
    return dataclasses.replace(write, exposure=pop.exposure[execution_id], new_buys=NOTIONAL)


async def _round(store: PostgresStore, pop: Population, batch: int) -> float:
    """Seconds to commit one step for every execution of `pop`, `batch` per commit."""
    started = time.perf_counter()
    for i in range(0, len(pop.ids), batch):
        writes = [_step(pop, e) for e in pop.ids[i : i + batch]]
        outcome = await store.commit(writes, caps=CAPS if pop.ledger else None)
        assert not outcome.lost, "a bench write was fenced out"
    return time.perf_counter() - started


async def run(
    url: str, *, executions: int, batch: int, rounds: int, users: int
) -> dict[str, object]:
    async with scratch_database(url, "bench_ledger") as dsn:
        await migrate(dsn)
        store = await PostgresStore.connect(
            DatabaseConfig(url=dsn, pool_min_size=2, pool_max_size=4), lease_seconds=3600
        )
        try:
            people = [uuid.uuid4() for _ in range(users)]
            pops = [
                Population("plain", False, [], people, {}, {}, {}),
                Population("ledger", True, [], people, {}, {}, {}),
            ]
            for pop in pops:
                await _populate(store, pop, executions, batch)
            for pop in pops:  # warm-up: plans cached, pages in memory
                await _round(store, pop, batch)
            times: dict[str, list[float]] = {p.name: [] for p in pops}
            for r in range(rounds):
                for pop in pops if r % 2 == 0 else reversed(pops):
                    times[pop.name].append(await _round(store, pop, batch))
            # The bench's own check: the fleet total is what the ledger writes recorded.
            fleet = (await store.ledger_totals([]))[FLEET]
            assert fleet == sum(pops[1].exposure.values()), "the ledger lost a move"
        finally:
            await store.close()
    rate = {name: [executions / t for t in ts] for name, ts in times.items()}
    ratios = [ledger / plain for ledger, plain in zip(rate["ledger"], rate["plain"], strict=True)]
    return {
        "executions": executions,
        "batch": batch,
        "rounds": rounds,
        "users": users,
        "commits_per_round": -(-executions // batch),
        "plain_writes_per_s": _summary(rate["plain"]),
        "ledger_writes_per_s": _summary(rate["ledger"]),
        "ratio_ledger_to_plain": _summary(ratios, digits=3),
        "ledger_fleet_total": str(fleet),
    }


def _summary(values: list[float], digits: int = 0) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _database_url() -> str:
    if url := os.environ.get("DATABASE_URL"):
        return url
    env = Path(__file__).resolve().parents[1] / ".services" / "env"
    for line in env.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key == "DATABASE_URL":
            return value.strip("'\"")
    raise SystemExit("DATABASE_URL not set and no .services/env (scripts/services.sh up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            _database_url(),
            executions=args.executions,
            batch=args.batch,
            rounds=args.rounds,
            users=args.users,
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
