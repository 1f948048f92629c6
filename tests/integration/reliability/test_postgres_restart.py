"""PostgreSQL restarted mid-run (a private server, never the shared one): the worker's loops
survive, it reconnects, and nothing is lost or sent twice."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.errors import StoreError
from strategy_worker.oms_sim.server import OmsSimServer

from ..servers import PostgresControl
from .harness import (
    assert_never_twice_never_lost,
    encode,
    eventually,
    execution_of,
    ledger,
    open_rig,
    record_figures,
    strategy_message,
    unique,
)

pytestmark = pytest.mark.timeout(120)


async def test_postgres_restart_mid_run_the_worker_reconnects_and_loses_nothing(
    postgres_control: PostgresControl,
    redis_url: str,
    price_prefix: str,
    oms_server: OmsSimServer,
) -> None:
    # Arrange
    dsn = postgres_control.url
    await migrate(dsn)
    run = unique("pgrestart")
    rig = await open_rig(
        dsn=dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=f"{run}-w",
        position_check_interval=0.5,
    )
    messages = [strategy_message(i, run=run) for i in range(6)]
    ids = [execution_of(m) for m in messages]
    try:
        for message in messages[:3]:
            await rig.worker.handle_strategy(encode(message), "test")

        # Act: stop the server, let strategies arrive and the loops run against nothing
        # (the consumer would redeliver a message whose handler failed; here the test does),
        # then start it again.
        await postgres_control.astop()
        down_at = time.monotonic()

        async def feed() -> int:
            failures = 0
            for message in messages[3:]:
                while True:
                    try:
                        await rig.worker.handle_strategy(encode(message), "test")
                        break
                    except StoreError as exc:
                        if not exc.retryable:
                            raise
                        failures += 1
                        await asyncio.sleep(0.2)
            return failures

        feeding = asyncio.create_task(feed())
        await asyncio.sleep(2.0)
        await postgres_control.astart()
        down_for = time.monotonic() - down_at
        retried = await feeding
        recovered = await eventually(
            lambda: _all_filled(rig, ids), 30, "every execution filled after the restart"
        )
        await asyncio.sleep(1.5)  # lease, monitor and reconcile cycles on the new server
        # A background loop that ended with an error is the supervisor's `failure` (the
        # worker would stop on it); a retryable store error only waits for the next round.
        dead = rig.worker.supervisor.failure
        loops_alive = dead is None
        book = await _ledger_for(dsn, oms_server, ids)
    finally:
        await rig.close()

    # Assert
    assert loops_alive, repr(dead)
    counts = assert_never_twice_never_lost(book)
    assert set(book.db_orders) == set(book.oms_orders)
    record_figures(
        "postgres_restart",
        {
            "executions": len(ids),
            "handler_retries_while_down": retried,
            "database_down_s": round(down_for, 2),
            "all_filled_after_restart_s": round(recovered, 2),
            "background_loops_alive": loops_alive,
            **counts,
        },
    )


async def _all_filled(rig, ids) -> bool:  # type: ignore[no-untyped-def]
    try:
        for execution_id in ids:
            orders = await rig.store.get_orders(execution_id)
            if not orders or any(o.status.value != "FILLED" for o in orders):
                return False
    except StoreError:
        return False
    return True


async def _ledger_for(dsn: str, server: OmsSimServer, ids: list[uuid.UUID]):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    book = await ledger(dsn, server)
    wanted = {str(i) for i in ids}
    orders = {k: v for k, v in book.db_orders.items() if v[0] in wanted}
    oms = {k: v for k, v in book.oms_orders.items() if v[0] in wanted}
    return replace(
        book,
        db_orders=orders,
        oms_orders=oms,
        db_fills={k: v for k, v in book.db_fills.items() if v[0] in orders},
        oms_fills={k: v for k, v in book.oms_fills.items() if v[0] in oms},
        oms_log=[c for c in book.oms_log if c in oms],
    )
