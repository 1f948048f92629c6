"""HTTP endpoints: Prometheus `/metrics` (port 9091) and `/health` + `/ready` (port 8080).

- `GET /health` (liveness): 200 while the event loop answers and the optional liveness
  callable says alive; an orchestrator restarts the worker otherwise.
- `GET /ready` (readiness): runs every registered dependency check (Kafka, PostgreSQL, OMS)
  concurrently, each under `check_timeout`; 200 with per-dependency status when all pass,
  503 naming the failing ones otherwise, and 503 while the worker drains for shutdown.
Port 0 binds an ephemeral port (tests); the bound ports are reported after `start()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from strategy_worker.config import WorkerConfig
from strategy_worker.log import get_logger

ReadinessCheck = Callable[[], Awaitable[bool]]
_log = get_logger(__name__)


class HttpServer:
    """The worker's metrics and health endpoints on their own small aiohttp servers."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        checks: Mapping[str, ReadinessCheck] | None = None,
        health_host: str = "127.0.0.1",
        health_port: int = 8080,
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = 9091,
        check_timeout: float = 2.0,
        liveness: Callable[[], bool] | None = None,
    ) -> None:
        """`metrics_port=None` disables /metrics; equal host and port serve both on one."""
        self._registry = registry
        self._checks: dict[str, ReadinessCheck] = dict(checks or {})
        self._health_addr = (health_host, health_port)
        self._metrics_addr = None if metrics_port is None else (metrics_host, metrics_port)
        self._check_timeout = check_timeout
        self._liveness = liveness
        self._draining = False
        self._runners: list[web.AppRunner] = []
        self._bound: dict[str, int] = {}
        self._stopped = False

    @classmethod
    def from_config(
        cls,
        config: WorkerConfig,
        registry: CollectorRegistry,
        checks: Mapping[str, ReadinessCheck] | None = None,
        liveness: Callable[[], bool] | None = None,
    ) -> HttpServer:
        return cls(
            registry=registry,
            checks=checks,
            health_host=config.health.host,
            health_port=config.health.port,
            metrics_host=config.metrics.host,
            metrics_port=config.metrics.port if config.metrics.enabled else None,
            check_timeout=config.health.check_timeout,
            liveness=liveness,
        )

    # ------------------------------------------------------------------ lifecycle

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Register (or replace) a readiness check, e.g. once a client has connected."""
        self._checks[name] = check

    def set_draining(self) -> None:
        """From now on /ready answers 503 (shutdown in progress; stop routing work here)."""
        self._draining = True

    @property
    def health_port(self) -> int:
        return self._bound["health"]

    @property
    def metrics_port(self) -> int | None:
        return self._bound.get("metrics")

    async def start(self) -> None:
        if self._runners:
            return
        health = web.Application()
        health.router.add_get("/health", self._health)
        health.router.add_get("/ready", self._ready)
        shared = self._metrics_addr == self._health_addr and self._health_addr[1] != 0
        if self._metrics_addr is not None and shared:
            health.router.add_get("/metrics", self._metrics)
            port = await self._serve(health, self._health_addr)
            self._bound.update(health=port, metrics=port)
            return
        self._bound["health"] = await self._serve(health, self._health_addr)
        if self._metrics_addr is not None:
            metrics = web.Application()
            metrics.router.add_get("/metrics", self._metrics)
            self._bound["metrics"] = await self._serve(metrics, self._metrics_addr)
        _log.info("http listening", **{f"{name}_port": port for name, port in self._bound.items()})

    async def _serve(self, app: web.Application, addr: tuple[str, int]) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, addr[0], addr[1], reuse_address=True)
        await site.start()
        sockname = runner.addresses[-1]
        return int(sockname[1])

    async def stop(self) -> None:
        """Idempotent: close the listeners."""
        if self._stopped:
            return
        self._stopped = True
        for runner in reversed(self._runners):
            await runner.cleanup()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ handlers

    async def _health(self, _request: web.Request) -> web.Response:
        alive = self._liveness() if self._liveness is not None else True
        return web.json_response(
            {"status": "ok" if alive else "dead"}, status=200 if alive else 503
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _ready(self, _request: web.Request) -> web.Response:
        if self._draining:
            return web.json_response({"status": "draining", "checks": {}}, status=503)
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_check(self._checks[name]) for name in names))
        checks = dict(zip(names, results, strict=True))
        failing = sorted(name for name, result in checks.items() if not result["ok"])
        body: dict[str, Any] = {"status": "ready" if not failing else "not_ready", "checks": checks}
        if failing:
            body["failing"] = failing
        return web.json_response(body, status=503 if failing else 200)

    async def _run_check(self, check: ReadinessCheck) -> dict[str, Any]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._check_timeout):
                ok = bool(await check())
            error = None if ok else "check failed"
        except TimeoutError:
            ok, error = False, f"timeout after {self._check_timeout:g}s"
        except Exception as exc:
            # Only the type: an exception's text may hold a DSN or a host list.
            ok, error = False, type(exc).__name__
        result: dict[str, Any] = {"ok": ok, "ms": round((time.monotonic() - started) * 1000, 1)}
        if error is not None:
            result["error"] = error
        return result
