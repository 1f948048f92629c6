"""Readiness against the real Kafka and Redis: ready when they answer, 503 naming a dead one."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.http import HttpServer
from strategy_worker.adapters.kafka import KafkaProducer
from strategy_worker.adapters.redis_prices import RedisPriceSource
from strategy_worker.config import KafkaConfig, RedisSection

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_ready_reflects_real_dependencies(kafka_bootstrap: str, redis_url: str) -> None:
    producer = KafkaProducer(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    await producer.start()
    prices = RedisPriceSource.from_config(RedisSection.model_validate({"url": redis_url}))
    dead_redis = RedisPriceSource.from_config(
        RedisSection.model_validate({"url": "redis://127.0.0.1:1/0", "socket_timeout": 0.3})
    )
    http = HttpServer(
        registry=CollectorRegistry(),
        checks={"kafka": producer.ping, "redis": prices.ping},
        health_port=0,
        metrics_port=0,
        check_timeout=3.0,
    )
    await http.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{http.health_port}/ready"
            async with session.get(url) as response:
                ready_status, ready = response.status, await response.json()
            http.add_check("oms", dead_redis.ping)  # anything unreachable
            async with session.get(url) as response:
                failing_status, failing = response.status, await response.json()
    finally:
        await http.stop()
        await producer.stop()
        await prices.close()
        await dead_redis.close()

    assert ready_status == 200
    assert ready["checks"]["kafka"]["ok"]
    assert ready["checks"]["redis"]["ok"]
    assert failing_status == 503
    assert failing["failing"] == ["oms"]
