"""`strategy-worker paper`: the same worker as `run`, on embedded defaults.

- strategies from files (or standard input) in the `strategy.approved` format;
- the paper OMS in this process, still spoken to over gRPC on loopback;
- prices from a replayed file or a seeded random walk, on an accelerated clock;
- an embedded PostgreSQL (pgserver) with the production migrations and repository;
- events as JSON lines; a live terminal view; a closing summary computed from the store,
  with every P&L figure recomputed from the recorded fills;
- with `dashboard`, the web dashboard on loopback (the API in this process, live from the
  outbox, its buttons handed to this worker), its URL printed with a development token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry

from strategy_worker.adapters.oms_grpc.client import OmsGrpcClient
from strategy_worker.adapters.oms_grpc.config import BreakerConfig, OmsClientConfig, RetryConfig
from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore, migrate
from strategy_worker.config import WorkerConfig
from strategy_worker.oms_sim.config import OmsSimConfig
from strategy_worker.oms_sim.prices import RandomWalkPrices, ReplayPrices
from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.paper.embedded_pg import EmbeddedPostgres
from strategy_worker.paper.sinks import JsonLinesSink
from strategy_worker.paper.summary import ExecutionSummary, summarize
from strategy_worker.paper.view import LiveView
from strategy_worker.ports import PriceSource
from strategy_worker.runtime.clocks import AcceleratedClock, SystemClock
from strategy_worker.runtime.settings import RuntimeSettings, risk_limits_from
from strategy_worker.runtime.wiring import App, build_worker, install_signal_handlers
from strategy_worker.store import Store

#: Simulated trading starts at a US market open, so replayed example prices line up.
DEFAULT_START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperOptions:
    """Everything a paper run needs; built by the CLI."""

    strategies: Sequence[Path]
    """Files with one JSON message, or JSON lines; Path('-') reads standard input."""
    duration_s: float = 5 * 3600
    """Simulated seconds to run."""
    speed: float = 300.0
    """Simulated seconds per real second."""
    seed: int = 42
    prices_file: Path | None = None
    events_file: Path | None = None
    data_dir: Path | None = None
    """Keep the embedded database here (a temporary one is deleted at exit)."""
    live: bool = True
    keep_open: bool = False
    """Leave positions open at the end (policy handover) instead of closing them."""
    start: datetime = DEFAULT_START
    config: WorkerConfig = field(default_factory=WorkerConfig)
    dashboard: bool = False
    """Serve the web dashboard on loopback while the session runs."""
    dashboard_port: int = 0
    """0: a free port."""


@dataclass(frozen=True, slots=True)
class PaperResult:
    summaries: list[ExecutionSummary]
    dead_letters: int
    consistent: bool
    """True when every execution's P&L equals the replay of its recorded fills."""

    @property
    def exit_code(self) -> int:
        return 0 if self.consistent else 1


def read_messages(paths: Sequence[Path]) -> list[tuple[bytes, str]]:
    """(payload, source) per message: a file holds one JSON document, or else JSON lines
    (each non-empty line is a message; a bad one is dead-lettered like any other)."""
    out: list[tuple[bytes, str]] = []
    for path in paths:
        stdin = str(path) == "-"
        data = (sys.stdin.buffer.read() if stdin else path.read_bytes()).strip()
        name = "stdin" if stdin else str(path)
        try:
            json.loads(data)
        except ValueError:
            lines = [ln.strip() for ln in data.splitlines()]
            out += [(ln, f"{name}:{i + 1}") for i, ln in enumerate(lines) if ln]
        else:
            out.append((data, name))
    return out


def _prices(options: PaperOptions, clock: AcceleratedClock) -> PriceSource:
    if options.prices_file is not None:
        return ReplayPrices(options.prices_file, clock=clock)
    return RandomWalkPrices(
        seed=options.seed, volatility=Decimal("0.002"), clock=clock, step_s=60.0
    )


def _settings(config: WorkerConfig, speed: float) -> RuntimeSettings:
    ex = config.execution
    return RuntimeSettings(
        owner_id="paper",
        limits=risk_limits_from(config.risk),
        position_check_interval=ex.position_check_interval,
        rebalance_interval=ex.rebalance_interval,
        drift_threshold=ex.drift_threshold,
        shutdown_policy=ex.shutdown_policy,
        grace_period=max(ex.grace_period, 30.0),
        # Leases and reconciliation tick in real seconds; one worker owns everything here.
        lease_seconds=3600.0,
        heartbeat=60.0,
        reconcile_interval=max(ex.reconcile_interval, 600.0),
        close_timeout=10.0,
    )


async def run_paper(options: PaperOptions) -> PaperResult:
    """Run the paper session to the end and return its per-execution summaries."""
    clock = AcceleratedClock(start=options.start, speed=options.speed)
    prices = _prices(options, clock)
    sink = JsonLinesSink(options.events_file)
    stop = asyncio.Event()
    restore_signals = install_signal_handlers(stop)
    try:
        async with EmbeddedPostgres(options.data_dir) as pg:
            db = DatabaseConfig(url=pg.dsn, pool_min_size=1, pool_max_size=4)
            await migrate(db.dsn(), hint="the embedded paper database")
            async with contextlib.AsyncExitStack() as stack:
                settings = _settings(options.config, options.speed)
                store = await PostgresStore.connect(db, lease_seconds=settings.lease_seconds)
                stack.push_async_callback(store.close)
                oms_server = OmsSimServer(
                    OmsSimConfig(
                        host="127.0.0.1", port=0, tick_interval_s=0.02, fee_bps=Decimal(1)
                    ),
                    prices=prices,
                    clock=clock,
                )
                port = await oms_server.start()
                stack.push_async_callback(oms_server.stop)
                oms = OmsGrpcClient(_oms_config(port), registry=CollectorRegistry())
                stack.push_async_callback(oms.close)
                stack.push_async_callback(sink.close)
                app = await stack.enter_async_context(
                    build_worker(
                        options.config,
                        store=store,
                        oms=oms,
                        prices=prices,
                        price_feed=None,
                        publisher=sink,
                        dead_letters=sink,
                        clock=clock,
                        token_clock=SystemClock(),
                        settings=settings,
                        consume=False,
                        serve_http=False,
                        migrate=False,
                    )
                )
                if options.dashboard:
                    await _serve_dashboard(stack, options, db.dsn(), app, prices)
                summaries = await _session(app, options, clock, stop, store)
    finally:
        restore_signals()
    return PaperResult(
        summaries=summaries,
        dead_letters=len(sink.dead_letters),
        consistent=all(s.consistent for s in summaries),
    )


async def _session(
    app: App, options: PaperOptions, clock: AcceleratedClock, stop: asyncio.Event, store: Store
) -> list[ExecutionSummary]:
    worker = app.worker
    view = LiveView(worker.book, clock, enabled=options.live)
    created: list[uuid.UUID] = []
    await app.start()
    clock.restart()
    for payload, source in read_messages(options.strategies):
        before = set(worker.book.ids())
        await worker.handle_strategy(payload, source)
        created += [e for e in worker.book.ids() if e not in before]
    with view:
        real_seconds = options.duration_s / options.speed
        waiter = asyncio.create_task(worker.wait())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(real_seconds):
                while not stop.is_set() and not waiter.done():
                    view.refresh()
                    await asyncio.sleep(0.25)
        waiter.cancel()
        # The view keeps its last frame: the summary below tells how it ended.
        await app.stop("handover" if options.keep_open else "close")
    return [await summarize(store, execution_id) for execution_id in created]


class _WorkerControls:
    """The dashboard's control path in paper mode: its messages go to this worker's control
    desk, exactly as if read from `strategy.control` (verified, idempotent, recorded)."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        for _key, value in messages:
            await self._app.worker.handle_control(value, "dashboard")


async def _serve_dashboard(
    stack: contextlib.AsyncExitStack,
    options: PaperOptions,
    dsn: str,
    app: App,
    prices: PriceSource,
) -> None:
    from strategy_worker.api import serve_dashboard

    dashboard = await stack.enter_async_context(
        serve_dashboard(
            options.config,
            dsn,
            port=options.dashboard_port,
            control_sink=_WorkerControls(app),
            prices=prices,
        )
    )
    # Before the live view takes the terminal; the token is a development one (loopback).
    sys.stdout.write(f"dashboard: {dashboard.link}\n")
    sys.stdout.flush()


def _oms_config(port: int) -> OmsClientConfig:
    return OmsClientConfig(
        host="127.0.0.1",
        port=port,
        timeout=5.0,
        retry=RetryConfig(max_attempts=3, backoff_ms=100, max_backoff_ms=1000),
        breaker=BreakerConfig(failure_threshold=5, reset_timeout_s=2.0),
    )
