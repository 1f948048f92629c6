"""The running service end to end (issue 5, "How it must be shown"): `run_worker` with the
production wiring against Apache Kafka, PostgreSQL, Redis and the paper OMS over gRPC.

Every test publishes with an ordinary aiokafka producer and checks what really happened:
rows in PostgreSQL, orders in the OMS's venue log, records on the output topics, metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from strategy_worker.oms_sim.server import OmsSimServer

from .conftest import Db, PriceFeed, RunningWorker, TopicReader, Topics, eventually
from .sample import (
    CAPITAL,
    EXECUTION_ID,
    POSITION_LIMIT,
    SAMPLE,
    SAMPLE_BYTES,
    START_PRICES,
    STRATEGY_ID,
    USER_ID,
    control,
    execution_of,
    expected_quantity,
    other_strategy,
)

pytestmark = pytest.mark.integration

StartWorker = Callable[..., Awaitable[RunningWorker]]
ReadTopic = Callable[[str], Awaitable[TopicReader]]


async def started_and_filled(db: Db, execution_id: uuid.UUID = EXECUTION_ID) -> list[Any]:
    """Wait for the execution's three initial orders to be FILLED and the sample's stop-loss
    to rest at the paper OMS (one reduce-only STOP leg per position, issue 16); returns the
    initial orders' rows."""
    rows: list[Any] = await eventually(
        lambda: db.all_filled(execution_id, 3), within=20, what="initial orders filled"
    )

    async def legs_rest() -> bool:
        legs = [r for r in await db.orders(execution_id) if r["order_type"] == "STOP"]
        return len(legs) == 3 and all(r["status"] == "ACCEPTED" for r in legs)

    await eventually(legs_rest, within=20, what="stop-loss legs resting at the OMS")
    return rows


def weights(held: dict[str, Decimal], cash: Decimal, marks: dict[str, Decimal]) -> dict[str, Any]:
    values = {s: q * marks[s] for s, q in held.items()}
    equity = cash + sum(values.values(), Decimal(0))
    return {s: v / equity for s, v in values.items()}


# --------------------------------------------------------------------------- 1. intake


async def test_spec_sample_message_then_one_execution_orders_fills_and_started_event(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    read_topic: ReadTopic,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
) -> None:
    events = await read_topic(topics.execution)
    await start_worker()
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)

    orders = await started_and_filled(db)

    # Exactly one execution, the one derived from (strategy_id, timestamp).
    (execution,) = await db.executions()
    assert execution["execution_id"] == EXECUTION_ID
    assert execution["strategy_id"] == STRATEGY_ID
    assert execution["user_id"] == USER_ID
    assert execution["status"] == "active"
    assert execution["initial_capital"] == CAPITAL

    # One INITIAL buy per symbol, sized per the trading rules (AAPL's 35% capped at 30%).
    by_symbol = {r["symbol"]: r for r in orders}
    assert sorted(by_symbol) == ["AAPL", "GOOGL", "MSFT"]
    for symbol, row in by_symbol.items():
        assert (row["side"], row["order_type"], row["purpose"]) == ("BUY", "MARKET", "INITIAL")
        assert row["quantity"] == expected_quantity(symbol)
        assert row["price"] == START_PRICES[symbol]
        assert row["filled_quantity"] == row["quantity"]
        assert row["filled_price"] == START_PRICES[symbol]  # no slippage at the paper OMS
    aapl = by_symbol["AAPL"]
    assert aapl["quantity"] == 170
    assert aapl["quantity"] * START_PRICES["AAPL"] <= POSITION_LIMIT * CAPITAL
    assert (aapl["quantity"] + 1) * START_PRICES["AAPL"] > POSITION_LIMIT * CAPITAL
    capped = [
        e
        for e in await db.risk_events(EXECUTION_ID)
        if e["event_type"] == "ALLOCATION_CAPPED"
        and json.loads(e["details"]).get("symbol") == "AAPL"
    ]
    assert len(capped) == 1
    assert capped[0]["severity"] == "WARNING"

    # The OMS saw exactly the recorded orders (these and the stop-loss legs resting there),
    # once each, and its fills are the recorded fills.
    recorded = await db.orders(EXECUTION_ID)
    assert sorted(oms.venue.order_log) == sorted(r["client_order_id"] for r in recorded)
    assert {r["purpose"] for r in recorded if r not in orders} <= {"STOP_LOSS"}
    for row in orders:
        sim = oms.venue.get(client_order_id=row["client_order_id"])
        assert sim is not None
        assert sim.request.execution_id == EXECUTION_ID
        assert (sim.request.symbol, sim.request.quantity) == (row["symbol"], row["quantity"])
        assert sim.oms_order_id == row["oms_order_id"]
    fills = await db.fetch("SELECT fill_id, client_order_id, quantity, price FROM execution_fills")
    oms_fills = {
        f.fill_id: (f.client_order_id, f.quantity, f.price)
        for o in oms.venue.orders(execution_id=EXECUTION_ID)
        for f in o.fills
    }
    assert {r["fill_id"]: (r["client_order_id"], r["quantity"], r["price"]) for r in fills} == (
        oms_fills
    )
    assert len(oms_fills) == 3

    # `strategy.execution.started` exactly in the spec's format, keyed by the strategy id.
    await events.wait_for(
        lambda e: e["type"] == "strategy.execution.started", within=10, what="started event"
    )
    (record,) = [r for r in events.records if b'"strategy.execution.started"' in r.value]
    assert record.key == str(STRATEGY_ID).encode()
    assert dict(record.headers)["event-type"] == b"strategy.execution.started"
    started = json.loads(record.value, parse_float=Decimal)
    assert list(started) == [
        "type",
        "execution_id",
        "strategy_id",
        "user_id",
        "timestamp",
        "status",
        "initial_orders",
    ]
    assert started["execution_id"] == str(EXECUTION_ID)
    assert started["strategy_id"] == SAMPLE["strategy_id"]
    assert started["user_id"] == SAMPLE["user_id"]
    assert started["status"] == "active"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", started["timestamp"])
    lines = started["initial_orders"]
    assert [line["symbol"] for line in lines] == ["AAPL", "GOOGL", "MSFT"]
    for line in lines:
        assert list(line) == ["symbol", "side", "quantity", "price", "value"]
        assert line["side"] == "BUY"
        assert type(line["quantity"]) is int  # a JSON integer, as the spec's 200
        assert isinstance(line["price"], Decimal)
        assert isinstance(line["value"], Decimal)
        assert line["quantity"] == expected_quantity(line["symbol"])
        assert line["price"] == START_PRICES[line["symbol"]]
        assert line["value"] == line["quantity"] * line["price"]
    # Money with at least two decimals, exactly as the spec writes 175.50 and 35100.00.
    text = record.value.decode()
    assert '"quantity": 170, "price": 175.50, "value": 29835.00}' in text

    # Then one submitted and one filled event per order, all keyed by the strategy id.
    await eventually(
        lambda: _at_least(events, "order_filled", 3), within=10, what="order_filled events"
    )
    assert {e["client_order_id"] for e in events.of_type("order_submitted")} <= {
        r["client_order_id"] for r in await db.orders(EXECUTION_ID)
    }
    assert {e["client_order_id"] for e in events.of_type("order_submitted")} >= {
        r["client_order_id"] for r in orders
    }
    assert {e["fill_id"] for e in events.of_type("order_filled")} == set(oms_fills)
    assert {r.key for r in events.records} == {str(STRATEGY_ID).encode()}

    # The position monitor snapshots the positions it holds.
    async def snapshot() -> Any:
        rows = await db.fetch(
            "SELECT positions FROM position_snapshots WHERE execution_id = $1", EXECUTION_ID
        )
        return next((r for r in rows if len(json.loads(r["positions"])) == 3), None)

    snap = json.loads((await eventually(snapshot, within=10, what="snapshot"))["positions"])
    assert {s: Decimal(p["quantity"]) for s, p in snap.items()} == {
        s: expected_quantity(s) for s in START_PRICES
    }


async def _at_least(events: TopicReader, kind: str, count: int) -> bool:
    return len(events.of_type(kind)) >= count


# --------------------------------------------------------------------------- 2. stop-loss


async def test_price_below_stop_loss_then_position_closed_and_risk_event_recorded(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    read_topic: ReadTopic,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
    prices: PriceFeed,
) -> None:
    events = await read_topic(topics.execution)
    await start_worker()
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await started_and_filled(db)

    # The sample's stop_loss_pct is 5%: stop level 175.50 x 0.95 = 166.725. Trade below it.
    await prices.set("AAPL", "160.00")

    async def stop_order() -> Any:
        rows = await db.orders(EXECUTION_ID)
        return next(
            (r for r in rows if r["purpose"] == "STOP_LOSS" and r["status"] == "FILLED"), None
        )

    order = await eventually(stop_order, within=15, what="STOP_LOSS order filled")
    assert (order["symbol"], order["side"], order["quantity"]) == ("AAPL", "SELL", 170)
    assert order["filled_price"] == Decimal("160.00")
    sim = oms.venue.get(client_order_id=order["client_order_id"])
    assert sim is not None
    assert sim.request.purpose == "STOP_LOSS"
    assert sim.filled_quantity == 170

    triggered = [
        e for e in await db.risk_events(EXECUTION_ID) if e["event_type"] == "STOP_LOSS_TRIGGERED"
    ]
    assert len(triggered) == 1
    assert triggered[0]["severity"] == "CRITICAL"
    assert json.loads(triggered[0]["details"])["symbol"] == "AAPL"

    # The position is gone (in PostgreSQL and at the OMS); the others are untouched.
    held = await eventually(
        lambda: _held_without(db, "AAPL"), within=5, what="AAPL position closed"
    )
    assert held == {"GOOGL": expected_quantity("GOOGL"), "MSFT": expected_quantity("MSFT")}
    assert oms.venue.execution_book(EXECUTION_ID).net("AAPL") == 0
    (execution,) = await db.executions()
    assert execution["status"] == "active"
    assert execution["realized_pnl"] == 170 * (Decimal("160.00") - Decimal("175.50"))

    event = await events.wait_for(
        lambda e: e["type"] == "strategy.execution.stop_loss_triggered",
        within=5,
        what="stop_loss_triggered event",
    )
    assert (event["symbol"], event["quantity"]) == ("AAPL", 170)
    assert event["stop_price"] == Decimal("166.7250")


async def _held_without(db: Db, symbol: str) -> dict[str, Decimal] | None:
    held = await db.held(EXECUTION_ID)
    return None if symbol in held else held


# --------------------------------------------------------------------------- 3. rebalance


async def test_prices_drift_then_rebalance_batch_restores_target_weights(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    read_topic: ReadTopic,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
    prices: PriceFeed,
) -> None:
    events = await read_topic(topics.execution)
    await start_worker(SW__EXECUTION__REBALANCE_INTERVAL="0.5")
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await started_and_filled(db)

    # MSFT rallies: 73 x 550 = 40,150 of ~110,205 equity, a weight of ~36.4% (> 30% + 5).
    marks = {**START_PRICES, "MSFT": Decimal("550.00")}
    await prices.set("MSFT", marks["MSFT"])
    (before,) = await db.executions()
    drifted = weights(await db.held(EXECUTION_ID), before["cash"], marks)
    assert drifted["MSFT"] - POSITION_LIMIT > Decimal("0.05")

    rebalanced = await events.wait_for(
        lambda e: e["type"] == "strategy.execution.rebalanced", within=15, what="rebalanced"
    )
    assert rebalanced["max_drift"] > Decimal("0.05")

    async def batch_filled() -> list[Any]:
        rows = [r for r in await db.orders(EXECUTION_ID) if r["purpose"] == "REBALANCE"]
        return rows if rows and all(r["status"] == "FILLED" for r in rows) else []

    batch = await eventually(batch_filled, within=15, what="rebalance batch filled")
    sides = {(r["symbol"], r["side"]) for r in batch}
    assert ("MSFT", "SELL") in sides
    assert {("AAPL", "BUY"), ("GOOGL", "BUY")} <= sides
    # Sells go first: every sell has a lower intent_seq than every buy.
    assert max(r["intent_seq"] for r in batch if r["side"] == "SELL") < min(
        r["intent_seq"] for r in batch if r["side"] == "BUY"
    )
    for row in batch:
        sim = oms.venue.get(client_order_id=row["client_order_id"])
        assert sim is not None
        assert sim.request.purpose == "REBALANCE"
        assert sim.filled_quantity == row["quantity"]
    lines = {(line["symbol"], line["side"], line["quantity"]) for line in rebalanced["orders"]}
    assert lines == {(r["symbol"], r["side"], int(r["quantity"])) for r in batch}

    # Back on target: every weight within the 5-point threshold, never above the 30% limit.
    (after,) = await db.executions()
    restored = weights(await db.held(EXECUTION_ID), after["cash"], marks)
    assert set(restored) == {"AAPL", "GOOGL", "MSFT"}
    for symbol, weight in restored.items():
        assert abs(weight - POSITION_LIMIT) <= Decimal("0.05"), (symbol, weight)
        assert weight <= POSITION_LIMIT + Decimal("0.005"), (symbol, weight)
    assert max(abs(w - POSITION_LIMIT) for w in restored.values()) < max(
        abs(w - POSITION_LIMIT) for w in drifted.values()
    )


# --------------------------------------------------------------------------- 4. stop request


async def test_stop_request_on_control_topic_then_everything_closed_and_stopped(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    read_topic: ReadTopic,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
    prices: PriceFeed,
) -> None:
    events = await read_topic(topics.execution)
    worker = await start_worker()
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await started_and_filled(db)
    await prices.set("GOOGL", "150.00")  # close at a profit on one symbol

    request_id = uuid.uuid4()
    await producer.send_and_wait(
        topics.control, control("stop", EXECUTION_ID, request_id), key=str(EXECUTION_ID).encode()
    )

    stopped = await events.wait_for(
        lambda e: e["type"] == "strategy.execution.stopped", within=20, what="stopped event"
    )
    assert stopped["status"] == "stopped"
    assert stopped["execution_id"] == str(EXECUTION_ID)
    assert stopped["request_id"] == str(request_id)
    assert stopped["reason"]
    # A stop is a plan (issue 12): announced as `stopping`, ended as `stopped` once flat.
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events.json()]
    assert kinds.count("stopping") == 1
    assert kinds.index("stopping") < kinds.index("stopped")

    (execution,) = await db.executions()
    assert execution["status"] == "stopped"
    assert execution["stopped_at"] is not None
    assert await db.held(EXECUTION_ID) == {}
    closes = [r for r in await db.orders(EXECUTION_ID) if r["purpose"] == "CLOSE"]
    assert sorted((r["symbol"], r["side"], r["status"]) for r in closes) == [
        ("AAPL", "SELL", "FILLED"),
        ("GOOGL", "SELL", "FILLED"),
        ("MSFT", "SELL", "FILLED"),
    ]
    book = oms.venue.execution_book(EXECUTION_ID)
    assert all(book.net(symbol) == 0 for symbol in START_PRICES)
    assert execution["realized_pnl"] == expected_quantity("GOOGL") * (
        Decimal("150.00") - START_PRICES["GOOGL"]
    )
    (request,) = await db.fetch("SELECT * FROM control_requests")
    assert request["request_id"] == str(request_id)
    assert request["outcome"] == "APPLIED"
    assert stopped["realized_pnl"] == execution["realized_pnl"]
    # Stopped executions are no longer counted as active.
    assert _sample(await worker.metrics(), "strategy_executions_active") == 0


# --------------------------------------------------------------------------- 6. observability


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_metrics_count_what_happened_and_readiness_follows_the_oms(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
) -> None:
    worker = await start_worker()
    await producer.send_and_wait(topics.approved, b"{not json")
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await started_and_filled(db)

    async def counted() -> str | None:
        text = await worker.metrics()
        return text if _sample(text, "strategy_orders_filled_total") >= 3 else None

    text = await eventually(counted, within=10, what="fills counted")
    families = _families(text)  # parses as Prometheus text exposition format
    for name in (
        "strategy_executions_active",
        "strategy_orders_submitted",
        "strategy_orders_filled",
        "strategy_pnl_total",
        "risk_violations",
        "strategy_messages_dead_lettered",
    ):
        assert name in families, f"{name} missing from /metrics"
    assert _sample(text, "strategy_orders_submitted_total") == 6  # 3 buys, 3 resting stops
    assert _sample(text, "strategy_orders_filled_total") == 3
    assert _sample(text, "strategy_executions_active") == 1
    risk_rows = await db.risk_events(EXECUTION_ID)
    violations = [row for row in risk_rows if row["severity"] in ("WARNING", "CRITICAL")]
    assert _sample(text, "risk_violations_total") == len(violations) > 0
    assert (
        _sample(text, "risk_violations_total", event_type="ALLOCATION_CAPPED", severity="WARNING")
        == 2  # AAPL and MSFT ask for 35%
    )
    assert _sample(text, "strategy_messages_dead_lettered_total", reason="invalid_json") == 1
    assert _sample(text, "strategy_messages_dead_lettered_total") == 1

    assert (await worker.get(worker.health_url))[0] == 200
    ready_url = worker.health_url.replace("/health", "/ready")
    status, body = await worker.get(ready_url)
    assert status == 200, body
    # Every dependency an execution needs to stay protected (the price feed too: it is how
    # a stop-loss hears a price at once), and the executions themselves.
    assert set(json.loads(body)["checks"]) == {
        "kafka",
        "postgres",
        "oms",
        "redis",
        "price-feed",
        "executions",
    }

    await oms.stop(grace=0)
    try:
        status, body = await worker.get(ready_url)
        assert status == 503
        assert json.loads(body)["failing"] == ["oms"]
        assert (await worker.get(worker.health_url))[0] == 200  # alive, just not ready
    finally:
        await oms.start()  # same port: the worker reconnects

    async def ready_again() -> bool:
        return (await worker.get(ready_url))[0] == 200

    await eventually(ready_again, within=10, what="/ready 200 after the OMS is back")


# --------------------------------------------------------------------------- 7. dead letters


async def test_malformed_message_dead_lettered_with_reason_and_next_one_executed(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    read_topic: ReadTopic,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
) -> None:
    dlq = await read_topic(topics.dead_letter)
    await start_worker()
    broken = b'{"type": "strategy.approved", "broken'
    bad_meta = await producer.send_and_wait(topics.approved, broken)
    valid, strategy_id = other_strategy("after-malformed")
    await producer.send_and_wait(topics.approved, valid)

    letter = await dlq.wait_for(lambda e: True, within=15, what="dead letter")
    assert letter["type"] == "strategy.dead_letter"
    assert letter["reason_code"] == "invalid_json"
    assert letter["reason"]
    assert letter["source_topic"] == topics.approved
    assert (letter["source_partition"], letter["source_offset"]) == (
        bad_meta.partition,
        bad_meta.offset,
    )
    assert letter["source"] == f"{topics.approved}/{bad_meta.partition}/{bad_meta.offset}"
    assert base64.b64decode(letter["payload_base64"]) == broken
    assert letter["payload_size"] == len(broken)
    (record,) = dlq.records
    assert dict(record.headers)["dlq-reason-code"] == b"invalid_json"

    execution_id = execution_of(strategy_id)
    await started_and_filled(db, execution_id)
    (execution,) = await db.executions()
    assert execution["strategy_id"] == strategy_id
    recorded = await db.orders(execution_id)  # with the stop-loss legs resting at the OMS
    assert sorted(oms.venue.order_log) == sorted(r["client_order_id"] for r in recorded)
    assert len(dlq.records) == 1  # only the malformed one


# --------------------------------------------------------------------------- 5b. cut-off stop


@pytest.mark.parametrize(
    "grace_period",
    [
        pytest.param("2", id="grace-period-runs-out"),
        # Longer than the 10 s the closes may take: the stop then gives up on the OMS.
        pytest.param("12", id="closes-time-out"),
    ],
)
async def test_close_shutdown_without_the_oms_then_successor_finishes_the_stop(
    grace_period: str,
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    db: Db,
    topics: Topics,
    oms: OmsSimServer,
) -> None:
    """A `close` shutdown that cannot reach the OMS leaves its closing orders recorded; the
    worker that takes the execution over must finish that stop, never trade it back in."""
    fast_leases = {"SW__EXECUTION__LEASE_SECONDS": "2", "SW__EXECUTION__HEARTBEAT": "0.5"}
    first = await start_worker(SW__EXECUTION__GRACE_PERIOD=grace_period, **fast_leases)
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await started_and_filled(db)

    await oms.stop(grace=0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await first.shutdown(within=30) == 0  # a clean exit, adapters closed in order
    assert loop.time() - began < float(grace_period) + 2
    (execution,) = await db.executions()
    assert execution["status"] == "active"  # could not close: nothing was sold
    closes = [r for r in await db.orders(EXECUTION_ID) if r["purpose"] == "CLOSE"]
    assert sorted((r["symbol"], r["status"]) for r in closes) == [
        (s, "PENDING") for s in ("AAPL", "GOOGL", "MSFT")
    ]

    await oms.start()
    await start_worker(
        WORKER_ID="successor",
        SW__EXECUTION__REBALANCE_INTERVAL="0.3",
        SW__EXECUTION__RECONCILE_INTERVAL="0.5",
        **fast_leases,
    )

    async def stopped() -> Any:
        (row,) = await db.executions()
        return row if row["status"] == "stopped" else None

    execution = await eventually(stopped, within=20, what="the successor finishes the stop")
    assert await db.held(EXECUTION_ID) == {}
    recorded = await db.orders(EXECUTION_ID)
    legs = [r for r in recorded if r["order_type"] == "STOP"]  # the stop-loss rested at the OMS
    orders = [r for r in recorded if r not in legs]
    assert [r["purpose"] for r in orders] == ["INITIAL"] * 3 + ["CLOSE"] * 3
    assert all(r["status"] == "FILLED" for r in orders)
    assert len(legs) == 3
    assert all(r["status"] == "CANCELLED" for r in legs)  # once flat, nothing works there
    assert sorted(oms.venue.order_log) == sorted(r["client_order_id"] for r in recorded)
    book = oms.venue.execution_book(EXECUTION_ID)
    assert all(book.net(symbol) == 0 for symbol in START_PRICES)


# --------------------------------------------------------------------------- OMS outage


async def test_oms_outage_during_reconciliation_then_execution_kept_and_still_protected(
    start_worker: StartWorker,
    producer: AIOKafkaProducer,
    db: Db,
    topics: Topics,
    oms: OmsSimServer,
    prices: PriceFeed,
) -> None:
    """A few seconds without the OMS must not end an execution: it stays active and owned,
    and once the OMS is back its stop-loss still closes the position."""
    worker = await start_worker(SW__EXECUTION__RECONCILE_INTERVAL="0.2")
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await started_and_filled(db)

    await oms.stop(grace=0)
    try:

        async def reconcile_failed() -> bool:
            text = await worker.metrics()
            return _sample(text, "oms_client_failures_total", method="ListOrders") >= 2

        await eventually(reconcile_failed, within=15, what="reconciliations failing")
    finally:
        await oms.start()
    (execution,) = await db.executions()
    assert execution["status"] == "active", execution["stop_reason"]
    assert execution["owner_id"] == worker.config.worker_id

    await prices.set("AAPL", "160.00")

    async def stop_loss_filled() -> bool:
        rows = await db.orders(EXECUTION_ID)
        return any(r["purpose"] == "STOP_LOSS" and r["status"] == "FILLED" for r in rows)

    await eventually(stop_loss_filled, within=20, what="stop-loss after the outage")
    (execution,) = await db.executions()
    assert execution["status"] == "active"
    assert "AAPL" not in await db.held(EXECUTION_ID)
