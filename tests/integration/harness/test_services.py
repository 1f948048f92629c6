"""The servers of scripts/services.sh answer for real, and the fault-test controls work."""

from __future__ import annotations

import subprocess
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from ..conftest import TopicFactory
from ..servers import ROOT, PostgresControl, started_here

SPEC_TOPICS = {
    "strategy.approved": 3,
    "strategy.execution": 3,
    "strategy.control": 1,
    "strategy.approved.dlq": 1,
}


async def test_postgres_accepts_password_login_and_answers_select_1(
    pg_conn: asyncpg.Connection,
) -> None:
    assert await pg_conn.fetchval("SELECT 1") == 1
    assert await pg_conn.fetchval("SHOW server_version_num") >= "150000"


async def test_fault_instance_is_not_the_shared_server(
    postgres_control: PostgresControl, pg_conn: asyncpg.Connection
) -> None:
    private = await asyncpg.connect(postgres_control.url)
    try:
        private_port = await private.fetchval("SHOW port")
    finally:
        await private.close()
    assert private_port == str(postgres_control.port)
    assert await pg_conn.fetchval("SHOW port") != private_port


async def test_fresh_database_is_empty_and_separate_from_the_shared_one(
    fresh_database_url: str, database_url: str
) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("CREATE TABLE only_here (id int)")
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert [t["tablename"] for t in tables] == ["only_here"]
    shared = await asyncpg.connect(database_url)
    try:
        assert await shared.fetchval("SELECT to_regclass('public.only_here')") is None
    finally:
        await shared.close()


async def test_redis_answers_ping_and_round_trips_a_value(redis_client: Redis) -> None:
    key = f"test:harness:{uuid.uuid4().hex}"
    assert await redis_client.ping() is True
    assert await redis_client.set(key, "42.50", ex=60) is True
    assert await redis_client.get(key) == "42.50"
    assert await redis_client.delete(key) == 1


async def test_kafka_delivers_a_produced_message_to_a_consumer(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic("test.harness")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"amount": "10.01"}', key=b"strategy-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-harness-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"strategy-1", b'{"amount": "10.01"}')
    assert (record.partition, record.offset) == (sent.partition, sent.offset)


async def test_spec_topics_exist_with_their_partition_counts(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(SPEC_TOPICS))
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    assert partitions == SPEC_TOPICS


async def test_postgres_restart_drops_connections_then_serves_new_ones(
    postgres_control: PostgresControl,
) -> None:
    before = postgres_control.pid
    conn = await asyncpg.connect(postgres_control.url)
    try:
        await postgres_control.arestart()
        with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    assert postgres_control.pid not in (None, before)
    again = await asyncpg.connect(postgres_control.url)
    try:
        assert await again.fetchval("SELECT 1") == 1
    finally:
        await again.close()


async def test_postgres_stopped_refuses_connections_until_started(
    postgres_control: PostgresControl,
) -> None:
    await postgres_control.astop()
    assert postgres_control.pid is None
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(postgres_control.url, timeout=5)
    await postgres_control.astart()
    conn = await asyncpg.connect(postgres_control.url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_status_reports_every_server_running(database_url: str) -> None:
    if not started_here():
        pytest.skip("servers were given by environment variables, not started by the harness")
    proc = subprocess.run(
        ["bash", "scripts/services.sh", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["postgres", "running"],
        ["redis", "running"],
        ["kafka", "running"],
    ]
