"""The bar path: closed bars in, each execution's rules evaluated, decisions committed.

One `SignalDesk` per worker (docs/signals.md, "What rules do to an execution"):

    bar topic (KafkaBarFeed) ─┐
    prices seen (BarBuilder) ─┴─▶ BarGate ─▶ market_bars ─▶ SignalEngine per execution
                                                              └─▶ one step per execution
                                                            (signal_steps.apply_evaluations)

- **Sources.** With a bar feed (`kafka.topics.bars`, or a paper bar file) its batches are
  ingested as they come (`pump`). Without one, bars are built from every batch of prices
  the worker reads (`observe`: the price watch's announcements and the monitor's cycles,
  through `Monitor.observed`); `tick` closes quiet symbols' bars when the clock passes their
  end. A built bar that began before the desk watched its stream is dropped (it would be
  partial); so is an interval without any price (no synthetic bars).
- **Acceptance, then storage, then use.** One `BarGate` keeps every stream moving forward
  (duplicates, late bars, corrections after use and unclosed bars are ignored and counted,
  `strategy_bars_ignored_total{reason}`); the accepted bars are written to `market_bars`
  (retried while the store is unreachable) before any engine reads them, so a rebuild
  replays exactly what was used.
- **Engines.** Every execution with rules gets a `SignalEngine` the first time the desk
  sees it in the book (on the next `tick` or batch): warmed with the stored bars of each
  stream, the last `warmup_bars` that closed before the execution started (the start of
  the bar that contains `started_at`) and every stored bar since. The same happens after a
  restart, a takeover or a reload (a new runner), so the rebuilt engine has read the same
  bars in the same order as the live one and decides the same on the next bar. Phases are
  never stored: they are derived from the committed model before each bar
  (`signal_phases.entered_symbols`).
- **Decisions.** Each engine evaluates the batch's bars once (`SignalEngine.evaluate`);
  then ONE `Engine.act_many` per 500 executions decides on those evaluations
  (`signal_steps.apply_evaluations`, pure, so a step the risk ledger makes decide again
  decides the same bars again): the decisions, the orders they caused and their events are
  committed together. An engine whose step did not run or whose commit's outcome is
  unknown (the runner was dirty or replaced) is rebuilt from the store before its next
  bar; that batch's decisions are then not made again (the next bar on which a rule holds
  fires again).

Everything here runs in one task at a time (`_lock`): bars are used in the order they were
accepted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.clock import Clock
from strategy_worker.domain.events import RiskEvent, RiskEventType, Severity, details
from strategy_worker.domain.signals.acceptance import BarGate
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.builder import BarBuilder
from strategy_worker.domain.signals.engine import BarEvaluation, SignalEngine
from strategy_worker.domain.signals.timeframes import Timeframe
from strategy_worker.errors import StoreError, StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import BarFeed, BarStore, PriceSource
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.runtime.engine import Engine
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.signal_steps import apply_evaluations
from strategy_worker.runtime.step import Step
from strategy_worker.runtime.supervisor import Sleep, Supervisor

_log = get_logger(__name__)

_Key = tuple[str, Timeframe]

BATCH = 500
"""Executions per commit of one batch of bars."""
_STORE_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_RANGE_AHEAD = timedelta(days=8)  # longer than any timeframe: "every stored bar since"


@dataclass(slots=True)
class _Entry:
    """One execution's engine, for the runner it was built for."""

    runner: ExecutionRunner
    engine: SignalEngine
    stale: bool = False
    """A step that should have read bars did not run or commit: rebuild before the next."""


@dataclass(slots=True)
class _Pending:
    bars: list[Bar] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class SignalDesk:
    """Bars in, rules evaluated, decisions committed (see the module docstring)."""

    def __init__(
        self,
        *,
        book: ExecutionBook,
        engine: Engine,
        market: BarStore,
        prices: PriceSource,
        clock: Clock,
        metrics: WorkerMetrics,
        supervisor: Supervisor,
        sleep: Sleep,
        max_clock_skew: timedelta,
        build_from_prices: bool,
    ) -> None:
        self._book = book
        self._engine = engine
        self._market = market
        self._prices = prices
        self._clock = clock
        self._metrics = metrics
        self._supervisor = supervisor
        self._sleep = sleep
        self._gate = BarGate(max_clock_skew=max_clock_skew)
        self._builder = BarBuilder(()) if build_from_prices else None
        self._watching: dict[tuple[str, Timeframe], datetime] = {}
        """Streams the builder builds, and since when: an earlier bar would be partial."""
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._flagged: dict[uuid.UUID, ExecutionRunner] = {}
        self._streams: dict[tuple[str, Timeframe], set[uuid.UUID]] = {}
        self._seen_version = -1
        self._lock = asyncio.Lock()
        self._pending = _Pending()

    # ------------------------------------------------------------------ reading

    @property
    def idle(self) -> bool:
        """Nothing waits to be evaluated (paper mode's replay waits for this)."""
        return not self._lock.locked() and not self._pending.bars

    # ------------------------------------------------------------------ inputs

    def observe(self, prices: Mapping[str, Decimal]) -> None:
        """Prices the worker just read: ticks of the bars it builds (no bar feed)."""
        builder = self._builder
        if builder is None or not self._watching:
            return
        now = self._clock.now()
        wanted = {s for s, _ in self._watching}
        ticks = {s: p for s, p in prices.items() if s in wanted}
        closed = builder.on_prices(ticks, now) if ticks else builder.advance(now)
        self._queue(closed)

    async def ingest(self, bars: Sequence[Bar], *, source: str) -> None:
        """A batch of closed bars from a feed: gate, store, evaluate; returns once every
        decision it caused is committed."""
        async with self._lock:
            await self._ingest(bars, source=source)

    async def pump(self, feed: BarFeed, *, source: str = "kafka") -> None:
        """Read a bar feed until it ends (a supervised task); `source` is what
        `market_bars.source` says of its bars."""
        attempt = 0
        while True:
            try:
                await feed.start()
                break
            except Exception as exc:  # the topic not created yet, the broker not up yet
                attempt += 1
                if attempt <= 3 or attempt % 20 == 0:
                    _log.warning("bar feed not started; retrying", error=str(exc)[:200])
                if self._supervisor.stopping:
                    return
                await self._sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))
        try:
            async for batch in feed:
                if batch.bars:
                    await self.ingest(batch.bars, source=source)
        finally:
            await feed.stop()

    async def run(self) -> None:
        """Evaluate the bars built from prices, in the order they closed (a supervised
        task: `observe` only queues them)."""
        while True:
            await self._pending.event.wait()
            await self.flush()

    async def flush(self) -> None:
        """Evaluate the built bars queued so far."""
        async with self._lock:
            bars, self._pending.bars = self._pending.bars, []
            self._pending.event.clear()
            if bars:
                await self._ingest(bars, source="prices")

    async def tick(self) -> None:
        """Periodic: take on new executions (warm-up), close built bars that are due."""
        async with self._lock:
            await self._sync()
            if self._builder is not None:
                self._queue(self._builder.advance(self._clock.now()))
        await self.flush()

    def _queue(self, closed: Sequence[Bar]) -> None:
        kept = [b for b in closed if b.start >= self._watching.get(b.key, b.end)]
        dropped = len(closed) - len(kept)
        if dropped:
            self._metrics.bars_ignored.labels(reason="partial").inc(dropped)
        if kept:
            self._metrics.bars_received.labels(source="prices").inc(len(kept))
            self._pending.bars.extend(kept)
            self._pending.event.set()

    # ------------------------------------------------------------------ one batch

    async def _ingest(self, bars: Sequence[Bar], *, source: str) -> None:
        now = self._clock.now()
        result = self._gate.accept(bars, now=now)
        for item in result.ignored:
            self._metrics.bars_ignored.labels(reason=str(item.reason)).inc()
        if not result.accepted:
            return
        first: dict[tuple[str, Timeframe], datetime] = {}
        for bar in result.accepted:
            first.setdefault(bar.key, bar.start)
        await self._sync(before=first)
        if not await self._store(result.accepted, source=source, now=now):
            return
        await self._evaluate(result.accepted)

    async def _store(self, bars: Sequence[Bar], *, source: str, now: datetime) -> bool:
        """Write the bars before anything reads them; retried while the store is down.
        False when the worker stops first (the bars are then not used)."""
        attempt = 0
        while True:
            try:
                await self._market.upsert_bars(bars, source=source, received_at=now)
                return True
            except StoreError as exc:
                if not exc.retryable:
                    raise
                delay = _STORE_RETRY_S[min(attempt, len(_STORE_RETRY_S) - 1)]
                attempt += 1
                _log.warning("bars not stored yet; retrying", bars=len(bars), error=str(exc))
            if self._supervisor.stopping:
                return False
            await self._sleep(delay)

    async def _evaluate(self, bars: Sequence[Bar]) -> None:
        by_execution: dict[uuid.UUID, list[Bar]] = {}
        for bar in bars:
            for execution_id in self._streams.get(bar.key, ()):
                by_execution.setdefault(execution_id, []).append(bar)
        if not by_execution:
            return
        ids = sorted(by_execution)
        runners = [self._entries[e].runner for e in ids]
        # The engines move once per bar, here; the steps decide on what they found (and
        # may do so again when the risk ledger refuses a commit).
        now = self._clock.now()
        evaluated: dict[uuid.UUID, list[BarEvaluation]] = {}
        for execution_id in ids:
            engine = self._entries[execution_id].engine
            found = (engine.evaluate(b, now=max(now, b.end)) for b in by_execution[execution_id])
            evaluated[execution_id] = [e for e in found if e is not None]
        await self._mark(runners, {b.symbol for b in bars if b.key in self._streams})
        fed: set[uuid.UUID] = set()

        def decide(step: Step) -> None:
            entry = self._entries.get(step.execution_id)
            if entry is None or entry.runner is not step.runner:
                return
            fed.add(step.execution_id)
            apply_evaluations(step, evaluated[step.execution_id])

        for i in range(0, len(runners), BATCH):
            chunk = runners[i : i + BATCH]
            try:
                done = await self._engine.act_many(chunk, decide)
            except StrategyWorkerError as exc:
                for runner in chunk:
                    self._stale(runner.execution_id)
                if exc.retryable:
                    _log.warning("signal decisions not committed", error=str(exc)[:200])
                elif len(chunk) == 1:  # one execution's write no retry fixes: its fault
                    self._supervisor.spawn(self._engine.fault(chunk[0], exc), "fault")
                else:
                    raise
                continue
            for runner in chunk:
                if runner.dirty or not self._book.is_current(runner):
                    self._stale(runner.execution_id)  # its commit's outcome is unknown
            self._count(done)
        for execution_id in ids:
            if execution_id not in fed:
                self._stale(execution_id)

    async def _mark(self, runners: Sequence[ExecutionRunner], symbols: set[str]) -> None:
        """Current prices of the bars' symbols: an entry is sized at the price of the moment
        it fires (a runner's marks may be a monitor cycle old)."""
        try:
            prices = await self._prices.get_prices(sorted(symbols))
        except StrategyWorkerError as exc:
            if not exc.retryable:
                raise
            _log.warning("prices not read for signals; marks as known", error=str(exc)[:200])
            return
        now = self._clock.now().timestamp()
        for runner in runners:
            runner.observe(prices, now)
            self._book.refresh(runner)

    def _stale(self, execution_id: uuid.UUID) -> None:
        entry = self._entries.get(execution_id)
        if entry is not None:
            entry.stale = True

    def _count(self, steps: Sequence[Step]) -> None:
        counter = self._metrics.signal_decisions
        for step in steps:
            for d in step.decisions:
                gate = "" if d.gate is None else str(d.gate)
                counter.labels(rule=str(d.rule), outcome=str(d.outcome), gate=gate).inc()

    # ------------------------------------------------------------------ engines

    async def _sync(
        self, *, before: Mapping[tuple[str, Timeframe], datetime] | None = None
    ) -> None:
        """Engines for the book's executions with rules: build the missing, the stale and
        those of a replaced runner; forget the ended."""
        stale = any(e.stale for e in self._entries.values())
        if self._book.version == self._seen_version and not stale:
            return
        self._seen_version = self._book.version
        current: dict[uuid.UUID, ExecutionRunner] = {}
        for runner in self._book:
            if not runner.running:
                continue
            info = runner.info
            if info.rules_problem is not None:
                await self._flag(runner)
            elif info.rules is not None:
                current[runner.execution_id] = runner
        for execution_id in [e for e in self._entries if e not in current]:
            del self._entries[execution_id]
        for execution_id, runner in sorted(current.items()):
            entry = self._entries.get(execution_id)
            if entry is None or entry.runner is not runner or entry.stale:
                self._entries.pop(execution_id, None)
                try:
                    self._entries[execution_id] = await self._build(runner, before or {})
                except StoreError as exc:
                    if not exc.retryable:
                        raise
                    # Without its history the engine would decide wrongly: none until the
                    # store answers (the next sync tries again; its bars wait in the store).
                    self._seen_version = -1
                    _log.warning(
                        "signal engine not built yet",
                        execution_id=str(execution_id),
                        error=str(exc)[:200],
                    )
        self._index()

    async def _build(
        self, runner: ExecutionRunner, before: Mapping[tuple[str, Timeframe], datetime]
    ) -> _Entry:
        """An engine warmed with the stored bars its execution has read (see the module
        docstring); `before`: the first bar of each stream in the batch being ingested,
        which the engine reads next and so must not be warmed with."""
        info = runner.info
        assert info.rules is not None
        engine = SignalEngine(info.rules, info.symbols)
        now = self._clock.now()
        anchor = info.started_at or now
        history: list[Bar] = []
        for tf, count in engine.history_needed().items():
            start = tf.floor(anchor)
            streams = [(symbol, tf) for symbol in engine.symbols]
            warmup = await self._market.load_warmup(streams, bars=count, before=start)
            history += [bar for series in warmup.values() for bar in series]
            history += await self._market.load_range(
                engine.symbols, tf, since=start, until=now + _RANGE_AHEAD
            )
        if before:
            history = [b for b in history if b.start < before.get(b.key, b.end)]
        engine.warm(history)
        _log.info(
            "signal engine ready",
            execution_id=str(info.execution_id),
            warm_bars=len(history),
        )
        return _Entry(runner=runner, engine=engine)

    async def _flag(self, runner: ExecutionRunner) -> None:
        """Stored rules that cannot be read back: nothing can be evaluated, so the
        execution only reduces risk (REDUCING, CRITICAL) until an operator looks."""
        if self._flagged.get(runner.execution_id) is runner:
            return
        self._flagged[runner.execution_id] = runner
        problem = runner.info.rules_problem
        text = f"its stored rules cannot be evaluated: {problem}"
        _log.error("rules unreadable", execution_id=str(runner.execution_id), problem=str(problem))

        def flag(step: Step) -> None:  # once per runner: at intake never, at each resume
            step.risk(
                RiskEvent(
                    event_type=RiskEventType.RULES_UNREADABLE,
                    severity=Severity.CRITICAL,
                    description=text[:300],
                    action_taken="REDUCING: no signal is evaluated, nothing new is bought",
                    details=details(
                        code=problem.code if problem else "", path=problem.path if problem else ""
                    ),
                )
            )
            step.anomaly(text)

        await self._supervisor.guard(runner, self._engine.act(runner, flag))

    def _index(self) -> None:
        streams: dict[tuple[str, Timeframe], set[uuid.UUID]] = {}
        for execution_id, entry in self._entries.items():
            engine = entry.engine
            for tf in engine.timeframes:
                for symbol in engine.symbols:
                    streams.setdefault((symbol, tf), set()).add(execution_id)
        self._streams = streams
        if self._builder is None:
            return
        now = self._clock.now()
        for key in streams:
            if key not in self._watching:
                self._watching[key] = now
                self._builder.add_timeframe(key[1])
        for key in [k for k in self._watching if k not in streams]:
            del self._watching[key]
