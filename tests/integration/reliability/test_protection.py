"""Protective orders on the real services (issue 16): PostgreSQL, Redis prices, the paper OMS
over gRPC in both modes (native: it holds stops, trails and OCO groups; emulated: MARKET and
LIMIT only, the worker holds the legs), and a worker process killed with SIGKILL.

- a bracket-like position (stop-loss + take-profit) whose entry fills partially, then a gap
  through the stop: what is held is exited, once, and the rest of the entry cancelled;
- a trailing stop that ratchets up with the price and fires: one exit;
- `kill -9` of `strategy-worker run` while a stop rests, then a price through it: exactly
  one exit (natively the OMS's, emulated the restarted worker's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from strategy_worker.domain.orders import OrderPurpose, OrderStatus, OrderType
from strategy_worker.oms_sim import ManualPrices, OmsSimConfig, OmsSimServer, SimOrder
from strategy_worker.runtime.intake import IncomingStrategy

from .harness import (
    USER_ID,
    eventually,
    fetch_all,
    open_rig,
    record_figures,
    spawn_worker,
    unique,
    worker_config_file,
)

pytestmark = pytest.mark.timeout(180)

D = Decimal
START = D("175.50")
MODES = ("native", "emulated")
TopicFactory = Callable[..., Awaitable[str]]


def approved(run: str, risk: dict[str, str], *, weight: str = "0.25") -> bytes:
    """One strategy on AAPL with these risk params, money as exact JSON numbers."""
    params = ", ".join(
        f'"{k}": "{v}"' if k == "protection" else f'"{k}": {v}' for k, v in risk.items()
    )
    strategy_id = uuid.uuid5(uuid.NAMESPACE_URL, run)
    return (
        '{"type": "strategy.approved", '
        f'"strategy_id": "{strategy_id}", "user_id": "{USER_ID}", '
        '"timestamp": "2024-01-01T00:00:00Z", "config": {"name": "protected", '
        '"type": "MOMENTUM", "symbols": ["AAPL"], '
        f'"allocation": {{"AAPL": {weight}}}, "initial_capital": 100000.00, '
        f'"risk_params": {{{params}}}}}}}'
    ).encode()


class Market:
    """One price for both sides: the paper OMS's (it triggers native stops on it) and the
    worker's marks in Redis."""

    def __init__(self, redis: Redis, prefix: str, oms_prices: ManualPrices) -> None:
        self._redis = redis
        self._prefix = prefix
        self.oms_prices = oms_prices

    async def set(self, price: str | Decimal, symbol: str = "AAPL") -> None:
        value = D(price)
        self.oms_prices.set_price(symbol, value)
        await self._redis.hset(
            f"{self._prefix}{symbol}",
            mapping={"price": str(value), "ts": datetime.now(UTC).isoformat()},
        )


@pytest.fixture
async def oms_prices() -> ManualPrices:
    return ManualPrices({"AAPL": START})


@contextlib.asynccontextmanager
async def paper_oms(
    prices: ManualPrices, *, native: bool, slices: int = 1, tick_s: float = 0.05
) -> AsyncIterator[OmsSimServer]:
    config = OmsSimConfig(
        port=0,
        native_protection=native,
        partial_fill_slices=slices,
        slippage_bps=D(0),
        tick_interval_s=tick_s,
    )
    server = OmsSimServer(config, prices=prices)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=None)


def protective(server: OmsSimServer, execution_id: uuid.UUID | None = None) -> list[SimOrder]:
    return [
        o
        for o in server.venue.orders(execution_id=execution_id)
        if OrderPurpose(o.request.purpose or "INITIAL").is_protective
    ]


def entries(server: OmsSimServer) -> list[SimOrder]:
    return [o for o in server.venue.orders() if o.request.purpose == OrderPurpose.INITIAL.value]


async def executions(dsn: str) -> list[uuid.UUID]:
    rows = await fetch_all(dsn, "SELECT execution_id FROM strategy_executions")
    return [r["execution_id"] for r in rows]


async def recorded_before_sent(dsn: str, server: OmsSimServer) -> None:
    """Every protective order the OMS holds is an execution_orders row, with its columns,
    committed before the OMS accepted it (one machine, one clock)."""
    rows = await fetch_all(
        dsn,
        "SELECT client_order_id, order_type, stop_price, trail_pct, oco_group_id, reduce_only, "
        "created_at FROM execution_orders",
    )
    stored = {r["client_order_id"]: r for r in rows}
    for order in protective(server):
        row = stored[order.client_order_id]
        req = order.request
        assert row["order_type"] == req.order_type.value
        assert row["reduce_only"] is True
        assert (row["oco_group_id"] or "") == req.oco_group_id
        assert row["stop_price"] == req.stop_price
        assert row["trail_pct"] == (req.trail.pct if req.trail else None)
        assert row["created_at"] <= order.created_at


# ---------------------------------------------------------------------- in process


@pytest.mark.parametrize("mode", MODES)
async def test_a_bracket_whose_entry_fills_partially_then_gaps_through_the_stop_exits_once(
    mode: str,
    migrated_dsn: str,
    redis_url: str,
    redis_client: Redis,
    price_prefix: str,
    oms_prices: ManualPrices,
) -> None:
    market = Market(redis_client, price_prefix, oms_prices)
    await market.set(START)
    # The OMS fills one slice of three per tick and ticks only when the test says so.
    async with paper_oms(oms_prices, native=mode == "native", slices=3, tick_s=3600) as server:
        rig = await open_rig(
            dsn=migrated_dsn,
            oms_port=server.port,
            redis_url=redis_url,
            price_prefix=price_prefix,
            owner_id=unique("bracket"),
            position_check_interval=0.1,
            reconcile_interval=0.5,
        )
        try:
            risk = {"stop_loss_pct": "0.05", "take_profit_pct": "0.20", "protection": "auto"}
            await rig.worker.handle_strategies(
                [IncomingStrategy(approved(unique("bracket"), risk), "test")]
            )
            await eventually(lambda: _entry_is(server, OrderStatus.PARTIALLY_FILLED), 5, "a slice")
            [entry] = entries(server)
            await asyncio.sleep(0.5)  # the worker watches the first slice (emulated)
            assert protective(server) == []  # native legs wait for the entry to finish

            await market.set("150.00")  # gaps through 166.7250
            await server.tick()  # the second slice fills at the gap: the worker learns later
            await eventually(
                lambda: _entry_is(server, OrderStatus.CANCELLED), 10, "the entry cancelled"
            )
            assert protective(server)  # the exit left with the cancel, in one commit
            ticker = asyncio.create_task(_tick(server))
            try:
                await eventually(lambda: _flat(server), 15, "the position exited")
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

            exits = protective(server)
            assert exits, "no protective exit reached the OMS"
            assert all(o.request.purpose == OrderPurpose.STOP_LOSS.value for o in exits)
            assert all(o.status is OrderStatus.FILLED for o in exits)
            assert entry.status is OrderStatus.CANCELLED  # the rest of the entry is not bought
            assert sum(o.filled_quantity for o in exits) == entry.filled_quantity
            _one_at_a_time(exits)
            await recorded_before_sent(migrated_dsn, server)
            triggered = await fetch_all(
                migrated_dsn,
                "SELECT details FROM risk_events WHERE event_type = 'STOP_LOSS_TRIGGERED'",
            )
            assert len(triggered) == 1
            assert json.loads(triggered[0]["details"])["gap"] == "True"
        finally:
            await rig.close()


async def test_native_legs_after_a_completed_entry_and_the_oms_fires_the_stop_on_a_gap(
    migrated_dsn: str,
    redis_url: str,
    redis_client: Redis,
    price_prefix: str,
    oms_prices: ManualPrices,
) -> None:
    market = Market(redis_client, price_prefix, oms_prices)
    await market.set(START)
    async with paper_oms(oms_prices, native=True, slices=3) as server:
        rig = await open_rig(
            dsn=migrated_dsn,
            oms_port=server.port,
            redis_url=redis_url,
            price_prefix=price_prefix,
            owner_id=unique("bracket"),
            position_check_interval=0.1,
        )
        try:
            risk = {"stop_loss_pct": "0.05", "take_profit_pct": "0.20"}
            await rig.worker.handle_strategies(
                [IncomingStrategy(approved(unique("native"), risk), "test")]
            )
            await eventually(lambda: _legs(server, 2), 10, "two native legs")
            [entry] = entries(server)
            stop, take = protective(server)
            assert entry.status is OrderStatus.FILLED
            assert (stop.request.order_type, take.request.order_type) == (
                OrderType.STOP,
                OrderType.LIMIT,
            )
            assert stop.request.oco_group_id == take.request.oco_group_id != ""
            assert stop.request.quantity == entry.filled_quantity

            await market.set("150.00")
            await eventually(lambda: _flat(server), 15, "the OMS's stop filled")
            await asyncio.sleep(1.0)  # the worker has heard of it: it must not exit again

            assert protective(server) == [stop, take]
            assert stop.status is OrderStatus.FILLED
            assert (take.status, take.reason) == (OrderStatus.CANCELLED, "OCO")
            await recorded_before_sent(migrated_dsn, server)
        finally:
            await rig.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_trailing_stop_ratchets_up_with_the_price_and_fires_once(
    mode: str,
    migrated_dsn: str,
    redis_url: str,
    redis_client: Redis,
    price_prefix: str,
    oms_prices: ManualPrices,
) -> None:
    market = Market(redis_client, price_prefix, oms_prices)
    await market.set(START)
    async with paper_oms(oms_prices, native=mode == "native") as server:
        rig = await open_rig(
            dsn=migrated_dsn,
            oms_port=server.port,
            redis_url=redis_url,
            price_prefix=price_prefix,
            owner_id=unique("trail"),
            position_check_interval=0.1,
        )
        try:
            risk = {"trailing_stop_pct": "0.05", "protection": "auto"}
            await rig.worker.handle_strategies(
                [IncomingStrategy(approved(unique("trail"), risk), "test")]
            )
            [execution] = await executions(migrated_dsn)
            await eventually(lambda: _filled(server), 5, "the entry filled")
            for price in ("180.00", "188.00", "195.00", "190.00", "186.00"):
                await market.set(price)
                await asyncio.sleep(0.4)
            # 195 x 0.95 = 185.25: nothing fired above it; the trail moved up with the price.
            assert [o for o in protective(server) if o.filled_quantity] == []
            state = await _protection_state(migrated_dsn, execution)
            if mode == "emulated":
                assert protective(server) == []
            else:
                [leg] = protective(server)
                assert leg.request.order_type is OrderType.TRAILING_STOP
                assert leg.watermark == D("195.00")  # the OMS trailed it

            await market.set("185.00")
            await eventually(lambda: _flat(server), 15, "the trailing stop fired")
            await asyncio.sleep(1.0)

            [fired] = protective(server)
            assert fired.status is OrderStatus.FILLED
            assert fired.request.purpose == OrderPurpose.TRAILING_STOP.value
            if mode == "emulated":
                assert state["guards"]["AAPL"]["watermark"] in ("195.00", "195.0000")
                assert fired.request.order_type is OrderType.MARKET
            await recorded_before_sent(migrated_dsn, server)
        finally:
            await rig.close()


# ---------------------------------------------------------------------- kill -9


@pytest.mark.parametrize("mode", MODES)
async def test_kill_9_while_a_stop_rests_then_a_price_through_it_exits_exactly_once(
    mode: str,
    migrated_dsn: str,
    redis_url: str,
    redis_client: Redis,
    kafka_bootstrap: str,
    make_topic: TopicFactory,
    price_prefix: str,
    oms_prices: ManualPrices,
    tmp_path: Path,
) -> None:
    market = Market(redis_client, price_prefix, oms_prices)
    await market.set(START)
    names = {
        "approved": await make_topic("approved"),
        "control": await make_topic("control"),
        "execution": await make_topic("execution"),
        "dead_letter": await make_topic("dlq"),
    }
    async with paper_oms(oms_prices, native=mode == "native") as server:
        config = worker_config_file(
            tmp_path / "worker.yaml",
            topics=names,
            group=unique("protect-group"),
            oms_port=server.port,
            price_prefix=price_prefix,
            position_check_interval=0.2,
        )
        env = {"DATABASE_URL": migrated_dsn, "REDIS_URL": redis_url}
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
        first = spawn_worker(config, worker_id="protect-1", env=env, log=tmp_path / "w1.log")
        second = None
        try:
            await _produce(
                kafka_bootstrap,
                names["approved"],
                approved(unique("kill"), {"stop_loss_pct": "0.05"}),
            )
            await eventually(lambda: _filled(server), 60, "the entry filled")
            [execution] = await executions(migrated_dsn)
            await eventually(
                lambda: _stop_rests(migrated_dsn, server, execution, mode), 20, "the stop rests"
            )
            first.kill()  # SIGKILL: nothing handed over
            killed_at = asyncio.get_running_loop().time()
            await market.set("160.00")  # through 166.7250 while nobody watches
            second = spawn_worker(config, worker_id="protect-2", env=env, log=tmp_path / "w2.log")
            took = await eventually(lambda: _flat(server), 60, "one exit after the restart")
            await eventually(
                lambda: _resumed_flat(migrated_dsn, execution, "protect-2"),
                60,
                "the restarted worker owns the execution, flat, nothing open",
            )
            await asyncio.sleep(2.0)  # nothing more may leave

            exits = protective(server, execution)
            live_or_filled = [o for o in exits if o.filled_quantity or not o.status.is_terminal]
            assert len(live_or_filled) == 1, [(o.client_order_id, o.status) for o in exits]
            [exit_order] = live_or_filled
            assert exit_order.status is OrderStatus.FILLED
            assert exit_order.request.purpose == OrderPurpose.STOP_LOSS.value
            if mode == "native":
                assert exit_order.request.order_type is OrderType.STOP  # the OMS's own
            else:
                assert exit_order.request.order_type is OrderType.MARKET
            assert server.venue.execution_book(execution).net("AAPL") == 0
            await recorded_before_sent(migrated_dsn, server)
            record_figures(
                f"protection_kill9_{mode}",
                {
                    "exit_after_kill_s": round(asyncio.get_running_loop().time() - killed_at, 3),
                    "waited_s": round(took, 3),
                },
            )
        finally:
            first.kill()
            if second is not None:
                second.kill()


# ---------------------------------------------------------------------- helpers

_STATE = "SELECT state::text AS state FROM execution_protection WHERE execution_id = $1"


async def _entry_is(server: OmsSimServer, status: OrderStatus) -> bool:
    return [o.status for o in entries(server)] == [status]


async def _legs(server: OmsSimServer, count: int) -> bool:
    return len([o for o in protective(server) if o.status is OrderStatus.ACCEPTED]) == count


async def _filled(server: OmsSimServer) -> bool:
    done = entries(server)
    return bool(done) and all(o.status is OrderStatus.FILLED for o in done)


async def _flat(server: OmsSimServer) -> bool:
    books = {o.request.execution_id for o in server.venue.orders()}
    if not books:
        return False
    sold = any(o.filled_quantity for o in protective(server))
    held = sum(server.venue.execution_book(e).net("AAPL") for e in books)
    return sold and held == 0


async def _tick(server: OmsSimServer) -> None:
    while True:
        await server.tick()
        await asyncio.sleep(0.05)


async def _protection_state(dsn: str, execution: uuid.UUID) -> dict[str, Any]:
    rows = await fetch_all(
        dsn,
        "SELECT state::text AS state FROM execution_protection WHERE execution_id = $1",
        execution,
    )
    assert rows, "no protection state committed"
    return json.loads(rows[0]["state"])


async def _stop_rests(dsn: str, server: OmsSimServer, execution: uuid.UUID, mode: str) -> bool:
    """Natively the STOP leg is accepted at the OMS; emulated the committed book watches the
    position with its stop-loss leg armed (no trigger)."""
    if mode == "native":
        return any(
            o.request.order_type is OrderType.STOP and o.status is OrderStatus.ACCEPTED
            for o in protective(server, execution)
        )
    rows = await fetch_all(
        dsn,
        "SELECT state::text AS state FROM execution_protection WHERE execution_id = $1",
        execution,
    )
    if not rows:
        return False
    guard = json.loads(rows[0]["state"])["guards"].get("AAPL")
    return bool(guard) and D(guard["quantity"]) > 0 and guard["trigger"] is None


async def _resumed_flat(dsn: str, execution: uuid.UUID, owner: str) -> bool:
    rows = await fetch_all(
        dsn,
        "SELECT owner_id, positions::text AS positions FROM strategy_executions "
        "WHERE execution_id = $1",
        execution,
    )
    live = await fetch_all(
        dsn,
        "SELECT count(*) AS n FROM execution_orders WHERE execution_id = $1 "
        "AND status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')",
        execution,
    )
    held = json.loads(rows[0]["positions"]).get("positions")
    return rows[0]["owner_id"] == owner and not held and live[0]["n"] == 0


def _one_at_a_time(exits: list[SimOrder]) -> None:
    """Each exit was accepted only after the previous one was done."""
    for before, after in itertools.pairwise(exits):
        assert before.updated_at <= after.created_at


async def _produce(bootstrap: str, topic: str, payload: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=uuid.uuid4().bytes)
    finally:
        await producer.stop()
