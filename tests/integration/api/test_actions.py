"""Every action reaches strategy.control exactly once, signed, even when the client retries
(one after another and concurrently); the outcome is then visible."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from strategy_worker.auth import ControlIdentity, Role, control_verifier_from
from strategy_worker.config import WorkerConfig
from strategy_worker.messages import ALL_ACTIONS, ControlRequest, parse_control

from .conftest import OPERATOR, OWNER, Http, Seeded, Tokens


@pytest.fixture
async def control_messages(kafka_bootstrap: str, control_topic: str) -> AsyncIterator[Any]:
    consumer = AIOKafkaConsumer(
        control_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()

    async def read(settle: float = 1.5) -> list[ControlRequest]:
        """Everything on the topic so far (waits `settle` s after the last record)."""
        out: list[ControlRequest] = []
        while True:
            batch = await consumer.getmany(timeout_ms=int(settle * 1000))
            if not batch:
                return out
            for records in batch.values():
                for record in records:
                    parsed = parse_control(record.value, actions=ALL_ACTIONS)
                    assert isinstance(parsed, ControlRequest), parsed
                    out.append(parsed)

    try:
        yield read
    finally:
        await consumer.stop()


@pytest.mark.parametrize("action", ["pause", "resume", "stop"])
async def test_a_retried_action_is_published_once_and_signed(
    http: Http,
    seeded: Seeded,
    tokens: Tokens,
    control_messages: Any,
    api_config: WorkerConfig,
    action: str,
) -> None:
    request_id = str(uuid.uuid4())
    path = f"/api/v1/executions/{seeded.own}/{action}"
    body = {"request_id": request_id, "reason": "from the test"}

    sequential = [await http.call("POST", path, token=tokens(OWNER), body=body) for _ in range(3)]
    concurrent = await asyncio.gather(
        *(http.call("POST", path, token=tokens(OWNER), body=body) for _ in range(5))
    )
    published = await control_messages()

    assert {status for status, _ in sequential + concurrent} == {202}
    assert {answer["request_id"] for _, answer in sequential + concurrent} == {request_id}
    assert [answer["replayed"] for _, answer in sequential] == [False, True, True]
    (message,) = published
    assert (str(message.request_id), str(message.action)) == (request_id, action)
    assert message.execution_id == seeded.own
    verifier = control_verifier_from(api_config)
    assert verifier.verify(message, now=datetime.now(UTC)) == ControlIdentity(
        OWNER, Role.USER, "token"
    )


async def test_the_same_request_id_for_another_request_is_a_conflict(
    http: Http, seeded: Seeded, tokens: Tokens, control_messages: Any
) -> None:
    request_id = str(uuid.uuid4())
    first = await http.call(
        "POST",
        f"/api/v1/executions/{seeded.own}/pause",
        token=tokens(OWNER),
        body={"request_id": request_id},
    )
    second = await http.call(
        "POST",
        f"/api/v1/executions/{seeded.own}/stop",
        token=tokens(OWNER),
        body={"request_id": request_id},
    )

    assert first[0] == 202
    assert second[0] == 409
    assert len(await control_messages()) == 1


async def test_an_action_on_a_stopped_execution_is_refused_before_publishing(
    http: Http, seeded: Seeded, tokens: Tokens, control_messages: Any
) -> None:
    status, answer = await http.call(
        "POST", f"/api/v1/executions/{seeded.own_stopped}/pause", token=tokens(OWNER), body={}
    )

    assert (status, answer["error"]) == (409, "not_running")
    assert await control_messages() == []


async def test_the_kill_switch_fans_out_once_per_running_execution(
    http: Http, seeded: Seeded, tokens: Tokens, control_messages: Any
) -> None:
    operator = tokens(OPERATOR, operator=True)
    body = {"scope": "all", "mode": "reduce_only", "request_id": str(uuid.uuid4())}
    one_user = {"scope": "user", "user_id": str(OWNER), "mode": "stop"}

    answers = [
        await http.call("POST", "/api/v1/kill-switch", token=operator, body=body) for _ in range(3)
    ]
    status, for_owner = await http.call(
        "POST", "/api/v1/kill-switch", token=operator, body=one_user
    )
    published = await control_messages()

    assert [a[1]["messages"] for a in answers] == [2, 2, 2]
    assert status == 202
    assert for_owner["messages"] == 1
    reduce_only = [m for m in published if str(m.action) == "reduce_only"]
    stops = [m for m in published if str(m.action) == "stop"]
    assert sorted(m.execution_id for m in reduce_only) == sorted([seeded.own, seeded.others])
    assert [m.execution_id for m in stops] == [seeded.own]
    assert len({m.request_id for m in published}) == 3


async def test_the_outcome_follows_the_workers_record(
    http: Http, seeded: Seeded, tokens: Tokens, api_db: str
) -> None:
    _, accepted = await http.call(
        "POST", f"/api/v1/executions/{seeded.own}/pause", token=tokens(OWNER), body={}
    )
    _, before = await http.call("GET", accepted["status_url"], token=tokens(OWNER))
    # What the worker's control desk writes when it applies the request.
    conn = await asyncpg.connect(api_db)
    try:
        await conn.execute(
            """INSERT INTO control_requests (request_id, execution_id, requested_by, action,
               outcome, detail, received_at, completed_at)
               VALUES ($1, $2, $3, 'pause', 'APPLIED', 'pause requested', now(), now())""",
            accepted["request_id"],
            seeded.own,
            str(OWNER),
        )
    finally:
        await conn.close()
    _, after = await http.call("GET", accepted["status_url"], token=tokens(OWNER))

    assert before["outcome"] == "PENDING"
    assert before["messages"][0]["outcome"] == "PUBLISHED"
    assert after["outcome"] == "APPLIED"
    assert json.dumps(after["messages"][0]["detail"]) == '"pause requested"'
