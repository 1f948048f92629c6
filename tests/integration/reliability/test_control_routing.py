"""Control requests in a consumer group: whichever worker consumes one, the execution's owner
applies it exactly once; a request from another user is refused and recorded.

Events reach the sinks through the outbox relay after their commit, published by whichever
worker's relay leads (one in the fleet at a time), so the events of a run are the union of
every worker's sink."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from strategy_worker.oms_sim.server import OmsSimServer

from .harness import (
    Rig,
    control_message,
    encode,
    eventually,
    execution_of,
    fetch_all,
    open_rig,
    record_figures,
    strategy_message,
    unique,
)

pytestmark = pytest.mark.timeout(90)


async def test_control_consumed_by_a_non_owner_is_applied_by_the_owner_once(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange: B drives the execution, A only happens to consume the control topic.
    run = unique("ctl")
    common = {
        "dsn": migrated_dsn,
        "oms_port": oms_server.port,
        "redis_url": redis_url,
        "price_prefix": price_prefix,
    }
    owner = await open_rig(owner_id=f"{run}-B", **common)
    bystander = await open_rig(owner_id=f"{run}-A", **common)
    try:
        message = strategy_message(0, run=run)
        await owner.worker.handle_strategy(encode(message), "test")
        execution_id = execution_of(message)
        assert owner.worker.book.get(execution_id) is not None
        pause = control_message(execution_id=execution_id, action="pause", reason="ops")

        # Act
        await bystander.worker.handle_control(pause, "control:0@1")
        waited = await eventually(
            _status_is(migrated_dsn, execution_id, "paused"), 5, "owner applies the pause"
        )
        for _ in range(3):  # redelivered and replayed, to both workers
            await bystander.worker.handle_control(pause, "control:0@1")
            await owner.worker.handle_control(pause, "control:0@1")
        await owner.worker.controls.apply_pending()
        await eventually(lambda: _published(migrated_dsn, execution_id), 5, "every event published")

        # Assert
        rows = await fetch_all(
            migrated_dsn,
            "SELECT outcome, detail FROM control_requests WHERE request_id = $1",
            json.loads(pause)["request_id"],
        )
        assert [(r["outcome"], r["detail"]) for r in rows] == [("APPLIED", "ops")]
        events = _events(owner, bystander)
        paused_events = [e for e in events if str(e.get("type", "")).endswith(".paused")]
        assert len(paused_events) == 1
        assert paused_events[0]["execution_id"] == str(execution_id)
        assert owner.worker.book.get(execution_id) is not None
        assert bystander.worker.book.get(execution_id) is None
        record_figures(
            "control_routing",
            {"owner_applied_after_s": round(waited, 3), "paused_events": len(paused_events)},
        )
    finally:
        await bystander.close()
        await owner.close()


async def test_control_for_an_unknown_execution_is_refused_not_left_waiting(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange
    rig = await open_rig(
        dsn=migrated_dsn,
        oms_port=oms_server.port,
        redis_url=redis_url,
        price_prefix=price_prefix,
        owner_id=unique("lonely"),
    )
    request = control_message(execution_id=uuid.uuid4(), action="stop")
    try:
        # Act
        await rig.worker.handle_control(request, "control:0@9")
    finally:
        await rig.close()

    # Assert
    rows = await fetch_all(
        migrated_dsn,
        "SELECT outcome FROM control_requests WHERE request_id = $1",
        json.loads(request)["request_id"],
    )
    assert [r["outcome"] for r in rows] == ["REFUSED"]


async def test_control_from_another_user_is_refused_and_recorded_critical(
    migrated_dsn: str, redis_url: str, price_prefix: str, oms_server: OmsSimServer
) -> None:
    # Arrange: the request reaches a worker that does not own the execution.
    run = unique("intruder")
    common = {
        "dsn": migrated_dsn,
        "oms_port": oms_server.port,
        "redis_url": redis_url,
        "price_prefix": price_prefix,
    }
    owner = await open_rig(owner_id=f"{run}-owner", **common)
    other = await open_rig(owner_id=f"{run}-other", **common)
    try:
        message = strategy_message(1, run=run)
        await owner.worker.handle_strategy(encode(message), "test")
        execution_id = execution_of(message)
        intruder = uuid.uuid4()
        stop = control_message(execution_id=execution_id, action="stop", user_id=intruder)

        # Act
        await other.worker.handle_control(stop, "control:0@2")
        await eventually(
            _outcome_is(migrated_dsn, json.loads(stop)["request_id"], "REFUSED"),
            5,
            "the owner refuses the request",
        )
        await owner.worker.handle_control(stop, "control:0@2")  # replayed

        # Assert
        events = await fetch_all(
            migrated_dsn,
            "SELECT severity, description FROM risk_events "
            "WHERE execution_id = $1 AND event_type = 'UNAUTHORIZED_CONTROL'",
            execution_id,
        )
        assert [e["severity"] for e in events] == ["CRITICAL"]
        assert str(intruder) in events[0]["description"]
        runner = owner.worker.book.get(execution_id)
        assert runner is not None
        assert runner.running
        sample = owner.registry.get_sample_value(
            "risk_violations_total",
            {"event_type": "UNAUTHORIZED_CONTROL", "severity": "CRITICAL"},
        )
        assert sample == 1.0
    finally:
        await other.close()
        await owner.close()


def _events(*rigs: Rig) -> list[Mapping[str, Any]]:
    """The events every rig's relay published, each once."""
    seen: dict[object, Mapping[str, Any]] = {}
    for rig in rigs:
        for event in rig.sink.published:
            seen.setdefault(event.event_id, event.payload)
    return list(seen.values())


async def _published(dsn: str, execution_id: uuid.UUID) -> bool:
    """No event of the execution is waiting in the outbox."""
    rows = await fetch_all(
        dsn,
        "SELECT count(*) AS n FROM event_outbox WHERE execution_id = $1 AND published_seq IS NULL",
        execution_id,
    )
    return bool(rows[0]["n"] == 0)


def _status_is(dsn: str, execution_id: uuid.UUID, status: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        rows = await fetch_all(
            dsn, "SELECT status FROM strategy_executions WHERE execution_id = $1", execution_id
        )
        return bool(rows) and rows[0]["status"] == status

    return check


def _outcome_is(dsn: str, request_id: str, outcome: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        rows = await fetch_all(
            dsn, "SELECT outcome FROM control_requests WHERE request_id = $1", request_id
        )
        return bool(rows) and rows[0]["outcome"] == outcome

    return check
