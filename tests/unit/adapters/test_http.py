"""Health, readiness and metrics endpoints on real ephemeral ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from strategy_worker.adapters.http import HttpServer
from strategy_worker.config import WorkerConfig
from strategy_worker.metrics import WorkerMetrics


def check(result: bool) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return result

    return run


async def hangs() -> bool:
    await asyncio.sleep(60)
    return True


async def raises() -> bool:
    raise ConnectionRefusedError("postgresql://u:secret@db refused")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def get_json(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.json()


def server(**kwargs: object) -> HttpServer:
    settings: dict[str, object] = {
        "registry": CollectorRegistry(),
        "health_port": 0,
        "metrics_port": 0,
        "check_timeout": 0.2,
    }
    settings.update(kwargs)
    return HttpServer(**settings)  # type: ignore[arg-type]


async def test_health_answers_200_while_the_loop_runs(session: aiohttp.ClientSession) -> None:
    async with server() as http:
        status, body = await get_json(session, http.health_port, "/health")

    assert (status, body) == (200, {"status": "ok"})


async def test_health_is_503_when_liveness_says_dead(session: aiohttp.ClientSession) -> None:
    async with server(liveness=lambda: False) as http:
        status, _ = await get_json(session, http.health_port, "/health")

    assert status == 503


async def test_ready_is_200_with_each_dependency_when_all_pass(
    session: aiohttp.ClientSession,
) -> None:
    checks = {"kafka": check(True), "postgres": check(True), "oms": check(True)}
    async with server(checks=checks) as http:
        status, body = await get_json(session, http.health_port, "/ready")

    assert status == 200
    assert body["status"] == "ready"
    assert {name: result["ok"] for name, result in body["checks"].items()} == {
        "kafka": True,
        "postgres": True,
        "oms": True,
    }


async def test_ready_is_503_naming_failing_timed_out_and_raising_checks(
    session: aiohttp.ClientSession,
) -> None:
    checks = {"kafka": check(True), "postgres": raises, "oms": hangs, "redis": check(False)}
    async with server(checks=checks) as http:
        status, body = await get_json(session, http.health_port, "/ready")
        _, text = await get(session, http.health_port, "/ready")

    assert status == 503
    assert body["failing"] == ["oms", "postgres", "redis"]
    assert body["checks"]["oms"]["error"] == "timeout after 0.2s"
    assert body["checks"]["postgres"]["error"] == "ConnectionRefusedError"
    assert "secret" not in text


async def test_ready_is_503_while_draining(session: aiohttp.ClientSession) -> None:
    async with server(checks={"kafka": check(True)}) as http:
        http.set_draining()
        status, body = await get_json(session, http.health_port, "/ready")

    assert (status, body["status"]) == (503, "draining")


async def test_metrics_endpoint_serves_parseable_prometheus_text(
    session: aiohttp.ClientSession,
) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.orders_submitted.inc(2)
    async with server(registry=registry) as http:
        assert http.metrics_port != http.health_port
        status, text = await get(session, http.metrics_port or 0, "/metrics")
        not_found, _ = await get(session, http.metrics_port or 0, "/health")

    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert status == 200
    assert values["strategy_orders_submitted_total"] == 2
    assert not_found == 404


async def test_from_config_uses_the_configured_ports() -> None:
    config = WorkerConfig.model_validate(
        {"metrics": {"port": 0, "host": "127.0.0.1"}, "health": {"port": 0, "host": "127.0.0.1"}}
    )

    http = HttpServer.from_config(config, CollectorRegistry())
    await http.start()
    await http.stop()
    await http.stop()  # idempotent

    assert http.health_port > 0
    assert (http.metrics_port or 0) > 0


async def test_stopped_server_no_longer_listens(session: aiohttp.ClientSession) -> None:
    http = server()
    await http.start()
    port = http.health_port
    await http.stop()

    with pytest.raises(aiohttp.ClientConnectionError):
        await get(session, port, "/health")
