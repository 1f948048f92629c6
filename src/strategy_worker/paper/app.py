"""`strategy-worker paper`: the same worker as `run`, on embedded defaults.

- strategies from files (or standard input) in the `strategy.approved` format;
- the paper OMS in this process, still spoken to over gRPC on loopback;
- prices from a replayed file or a seeded random walk, on an accelerated clock (or, with
  `--speed max`, a clock that steps from one bar to the next as fast as the engine goes);
- a replayed file on its own timestamps: its bars (an OHLCV file's, or those a price file's
  ticks build for the strategies' rules) reach the worker as the bar topic's would
  (`paper/replay.py`), and the marks come from the same file;
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
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry

from strategy_worker.adapters.bar_files import BarFile, BarFileKind, detect_kind
from strategy_worker.adapters.oms_grpc.client import OmsGrpcClient
from strategy_worker.adapters.oms_grpc.config import BreakerConfig, OmsClientConfig, RetryConfig
from strategy_worker.adapters.postgres import DatabaseConfig, PostgresStore, migrate
from strategy_worker.config import WorkerConfig
from strategy_worker.domain.signals.timeframes import Timeframe
from strategy_worker.domain.strategy import ApprovedStrategy, parse_strategy_message
from strategy_worker.oms_sim.config import OmsSimConfig
from strategy_worker.oms_sim.prices import RandomWalkPrices, ReplayPrices
from strategy_worker.oms_sim.server import OmsSimServer
from strategy_worker.paper.embedded_pg import EmbeddedPostgres
from strategy_worker.paper.replay import BarClosePrices, ReplayBarFeed, SteppedClock, drive
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
    speed: float | None = 300.0
    """Simulated seconds per real second; None: as fast as the engine goes (`--speed max`,
    a replayed file stepped from one bar to the next)."""
    seed: int = 42
    prices_file: Path | None = None
    events_file: Path | None = None
    data_dir: Path | None = None
    """Keep the embedded database here (a temporary one is deleted at exit)."""
    live: bool = True
    keep_open: bool = False
    """Leave positions open at the end (policy handover) instead of closing them."""
    start: datetime | None = None
    """When simulated time starts; None: at the replayed file's first timestamp (or
    DEFAULT_START for random-walk prices)."""
    config: WorkerConfig = field(default_factory=WorkerConfig)
    dashboard: bool = False
    """Serve the web dashboard on loopback while the session runs."""
    dashboard_port: int = 0
    """0: a free port."""


@dataclass(frozen=True, slots=True)
class ReplayStats:
    bars: int
    seconds: float
    """Real seconds from the first bar to the last one done with (startup excluded)."""

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PaperResult:
    summaries: list[ExecutionSummary]
    dead_letters: int
    consistent: bool
    """True when every execution's P&L equals the replay of its recorded fills."""
    replay: ReplayStats | None = None
    """With `--speed max`: how many bars were replayed, in how many real seconds."""

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


@dataclass(frozen=True, slots=True)
class _Market:
    """What the replayed file (or the random walk) gives the session."""

    start: datetime
    bars: BarFile | None
    kind: BarFileKind | None


def _market(options: PaperOptions, messages: Sequence[tuple[bytes, str]]) -> _Market:
    """Read the price file once: its bars (of the strategies' rule timeframes, for a price
    file), and the instant its market opens."""
    path = options.prices_file
    if path is None:
        return _Market(options.start or DEFAULT_START, None, None)
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    kind = detect_kind(header)
    if kind is BarFileKind.OHLCV:
        bars: BarFile | None = BarFile(path)
    else:
        timeframes = _rule_timeframes(messages)
        bars = None
        if timeframes and path.suffix not in {".jsonl", ".ndjson", ".json"}:
            ticks = ReplayPrices(path)
            bars = BarFile(path, timeframes=timeframes, complete_until=ticks.last_time)
    first = bars.first_time if bars is not None and kind is BarFileKind.OHLCV else None
    if first is None and kind is not BarFileKind.OHLCV:
        first = ReplayPrices(path).first_time
    return _Market(options.start or first or DEFAULT_START, bars, kind)


def _rule_timeframes(messages: Sequence[tuple[bytes, str]]) -> list[Timeframe]:
    """The timeframes the strategies' rules read (the bars to build from a price file)."""
    found: set[Timeframe] = set()
    for payload, _ in messages:
        parsed = parse_strategy_message(payload)
        if isinstance(parsed, ApprovedStrategy):
            for rules in (parsed.config.entry_rules, parsed.config.exit_rules):
                if rules is not None:
                    found.add(rules.timeframe)
    return sorted(found)


def _prices(
    options: PaperOptions, market: _Market, clock: AcceleratedClock | SteppedClock
) -> PriceSource:
    if options.prices_file is not None:
        if market.kind is BarFileKind.OHLCV and market.bars is not None:
            return BarClosePrices(market.bars, clock=clock)
        return ReplayPrices(options.prices_file, clock=clock)
    return RandomWalkPrices(
        seed=options.seed, volatility=Decimal("0.002"), clock=clock, step_s=60.0
    )


def _settings(config: WorkerConfig, speed: float | None) -> RuntimeSettings:
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
    messages = read_messages(options.strategies)
    market = _market(options, messages)
    clock: AcceleratedClock | SteppedClock
    if options.speed is None:
        clock = SteppedClock(start=market.start)
    else:
        clock = AcceleratedClock(start=market.start, speed=options.speed)
    prices = _prices(options, market, clock)
    feed = None if market.bars is None else ReplayBarFeed(market.bars, clock=clock)
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
                        bar_feed=feed,
                        bar_source="paper",
                    )
                )
                if options.dashboard:
                    await _serve_dashboard(stack, options, db.dsn(), app, prices)
                stats: list[ReplayStats] = []
                summaries = await _session(app, options, messages, clock, feed, stop, store, stats)
    finally:
        restore_signals()
    return PaperResult(
        summaries=summaries,
        dead_letters=len(sink.dead_letters),
        consistent=all(s.consistent for s in summaries),
        replay=stats[0] if stats else None,
    )


async def _session(
    app: App,
    options: PaperOptions,
    messages: Sequence[tuple[bytes, str]],
    clock: AcceleratedClock | SteppedClock,
    feed: ReplayBarFeed | None,
    stop: asyncio.Event,
    store: Store,
    stats: list[ReplayStats],
) -> list[ExecutionSummary]:
    worker = app.worker
    view = LiveView(worker.book, clock, enabled=options.live)
    created: list[uuid.UUID] = []
    await app.start()
    if isinstance(clock, AcceleratedClock):
        clock.restart()
    for payload, source in messages:
        before = set(worker.book.ids())
        await worker.handle_strategy(payload, source)
        created += [e for e in worker.book.ids() if e not in before]
    with view:
        waiter = asyncio.create_task(worker.wait())
        if isinstance(clock, SteppedClock):
            until = clock.now() + timedelta(seconds=options.duration_s)
            if feed is not None:
                began = time.perf_counter()
                bars = await drive(
                    app, feed, clock, until=until, stop=stop, on_instant=view.refresh
                )
                stats.append(ReplayStats(bars, time.perf_counter() - began))
            clock.run_freely(speed=300.0)  # the closing orders and stops need time to pass
        else:
            real_seconds = options.duration_s / options.speed  # type: ignore[operator]
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
