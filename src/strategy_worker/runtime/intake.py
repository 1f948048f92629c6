"""Intake of `strategy.approved` messages, a whole Kafka poll at a time.

For a batch: parse, and dead-letter what is malformed; a replay (the same message again)
is counted and logged, a message that reuses a strategy id and timestamp with other
content, or approves again a strategy that is still running, is dead-lettered with its
reason (`duplicate_conflict`, `strategy_running`): a trader re-approving a strategy stops
the running execution first, so there is never a second one to act on by mistake. Then
prices are read once, each strategy is sized and risk-checked in a step of its own (a
symbol without a current price is skipped with `PRICE_MISSING` and bought once priced; a
symbol gated by an entry rule is bought when its signal fires, `runtime/signal_phases.py`),
and every new execution with its first order intents and its `started` event is created
in ONE commit. Only then do the orders leave (the engine sends them) and may the caller
commit the offsets.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from strategy_worker import messages as msg
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.manager import RiskManager
from strategy_worker.domain.sizing import effective_weights, plan_initial_orders
from strategy_worker.domain.strategy import ApprovedStrategy, Rejection, parse_strategy_message
from strategy_worker.errors import StoreError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import PriceSource
from strategy_worker.runtime import signal_phases
from strategy_worker.runtime.decide import available_exposure
from strategy_worker.runtime.engine import LEDGER_ATTEMPTS, Engine
from strategy_worker.runtime.exposure import FleetExposure
from strategy_worker.runtime.facts import info_from_config
from strategy_worker.runtime.model import ExecutionModel
from strategy_worker.runtime.runner import ExecutionRunner
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.runtime.step import Step
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    ExecutionRecord,
    ExecutionState,
    ExecutionStatus,
    Fence,
    LedgerRefusedError,
    NewExecution,
    OutboxEvent,
    Store,
)

_log = get_logger(__name__)

Reject = Callable[[bytes, str, str, str], Awaitable[None]]
"""(payload, code, reason, source): dead-letter one message."""


@dataclass(frozen=True, slots=True)
class IncomingStrategy:
    """One raw message and where it came from (`topic/partition@offset`, or a file)."""

    payload: bytes
    source: str
    published_at: float | None = None
    """Epoch seconds the producer stamped on it, for the publish-to-order histogram."""


class Intake:
    """Admits approved strategies (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: RuntimeSettings,
        store: Store,
        prices: PriceSource,
        exposure: FleetExposure,
        engine: Engine,
        risk: RiskManager,
        metrics: WorkerMetrics,
        reject: Reject,
    ) -> None:
        self._settings = settings
        self._store = store
        self._prices = prices
        self._exposure = exposure
        self._engine = engine
        self._risk = risk
        self._metrics = metrics
        self._reject = reject

    async def admit(self, batch: Sequence[IncomingStrategy]) -> None:
        """Returns once every execution the batch created is durable with its intents."""
        fresh = await self._sort_out(batch)
        if not fresh:
            return
        prices = await self._prices.get_prices(
            sorted({sym for s, _ in fresh for sym in s.config.symbols})
        )
        for attempt in range(LEDGER_ATTEMPTS + 1):
            steps, refused = self._plan_all(fresh, prices)
            try:
                done = await self._engine.commit(steps, events=[r.event for r in refused])
                break
            except LedgerRefusedError as refusal:
                # Another worker took capacity meanwhile: plan again at the ledger's totals
                # (the last attempt with none left, so nothing is bought past the cap).
                self._exposure.observe({refusal.scope: refusal.exposure})
                self._exposure.full = attempt == LEDGER_ATTEMPTS - 1
        else:  # pragma: no cover - the last attempt buys nothing, so it is never refused
            raise StoreError("the risk ledger refused an intake without new buys")
        self._exposure.full = False
        for r in refused:
            self._metrics.strategies_unfunded.labels(outcome="refused").inc()
            await self._reject(r.item.payload, "insufficient_capacity", r.reason, r.item.source)
        for step in done:
            if step.funded < 1:
                self._metrics.strategies_unfunded.labels(outcome="scaled").inc()
            _log.info(
                "execution started",
                execution_id=str(step.execution_id),
                strategy_id=str(step.info.strategy_id),
                orders=len(step.intents),
                waiting=len(step.model.plans.deferred),
            )

    # ------------------------------------------------------------------ sorting out

    async def _sort_out(
        self, batch: Sequence[IncomingStrategy]
    ) -> list[tuple[ApprovedStrategy, IncomingStrategy]]:
        """Parse; dead-letter the bad, the conflicting and re-approvals; count replays."""
        parsed: dict[uuid.UUID, tuple[ApprovedStrategy, IncomingStrategy]] = {}
        for item in batch:
            result = parse_strategy_message(
                item.payload, max_bytes=self._settings.max_message_bytes
            )
            if isinstance(result, Rejection):
                await self._reject(item.payload, result.code, str(result), item.source)
                continue
            seen = parsed.get(result.execution_id)
            if seen is not None:
                await self._duplicate(item, result, _fingerprint(seen[0]))
                continue
            parsed[result.execution_id] = (result, item)
        if not parsed:
            return []
        existing = await self._store.existing_executions(list(parsed))
        for execution_id in sorted(existing):
            strategy, item = parsed.pop(execution_id)
            record = await self._store.get_execution(execution_id)
            stored = _stored_fingerprint(record) if record is not None else None
            await self._duplicate(item, strategy, stored)
        running = await self._store.running_strategies({s.strategy_id for s, _ in parsed.values()})
        fresh: list[tuple[ApprovedStrategy, IncomingStrategy]] = []
        taken: set[uuid.UUID] = set()
        for strategy, item in parsed.values():
            live = running.get(strategy.strategy_id)
            if live is not None or strategy.strategy_id in taken:
                await self._reject(
                    item.payload,
                    "strategy_running",
                    f"strategy_id: strategy {strategy.strategy_id} is running as execution "
                    f"{live or 'of this batch'}; stop it before approving it again",
                    item.source,
                )
                continue
            taken.add(strategy.strategy_id)
            fresh.append((strategy, item))
        return fresh

    async def _duplicate(
        self, item: IncomingStrategy, strategy: ApprovedStrategy, stored: tuple[object, ...] | None
    ) -> None:
        if stored is None or stored == _fingerprint(strategy):
            self._metrics.record_duplicate("replay")
            _log.info(
                "replayed strategy message ignored",
                execution_id=str(strategy.execution_id),
                source=item.source,
            )
            return
        self._metrics.record_duplicate("conflict")
        await self._reject(
            item.payload,
            "duplicate_conflict",
            f"timestamp: strategy {strategy.strategy_id} at {strategy.approved_at.isoformat()} "
            "was approved before with other content; a new approval needs a new timestamp",
            item.source,
        )

    # ------------------------------------------------------------------ planning

    def _plan_all(
        self,
        fresh: Sequence[tuple[ApprovedStrategy, IncomingStrategy]],
        prices: Mapping[str, Decimal],
    ) -> tuple[list[Step], list[_Refused]]:
        exposure = _Planned(self._exposure)
        steps: list[Step] = []
        refused: list[_Refused] = []
        for strategy, item in fresh:
            step = self._plan(strategy, prices, exposure, item.published_at)
            minimum = self._settings.limits.min_funded_fraction
            if step.funded < minimum and step.requested > 0:
                refused.append(_refusal(step, item, minimum))
                continue
            exposure.add(strategy.user_id, step.exposure())
            steps.append(step)
        return steps, refused

    def _plan(
        self,
        strategy: ApprovedStrategy,
        prices: Mapping[str, Decimal],
        exposure: _Planned,
        published_at: float | None,
    ) -> Step:
        """Size and risk-check one strategy into the step that creates its execution."""
        settings = self._settings
        execution_id = strategy.execution_id
        config = strategy.config.to_json()
        now = self._engine.ctx.clock.now()
        info = info_from_config(
            execution_id=execution_id,
            strategy_id=strategy.strategy_id,
            user_id=strategy.user_id,
            config=config,
            initial_capital=strategy.config.initial_capital,
            worker_limits=settings.limits,
            started_at=now,
        )
        model = ExecutionModel(
            status=ExecutionStatus.ACTIVE,
            portfolio=Portfolio(strategy.config.initial_capital),
            risk=self._risk.new_execution(
                execution_id,
                start_equity=strategy.config.initial_capital,
                risk_params=strategy.config.risk_params,
            ),
            orders={},
            next_seq=1,
            version=0,
        )
        runner = ExecutionRunner(
            info=info,
            model=model,
            fence=Fence(owner_id=settings.owner_id, epoch=FIRST_LEASE_EPOCH),
        )
        runner.observe(prices, now.timestamp())
        step = Step(runner, replace(self._engine.ctx, exposure=exposure))
        marks = runner.fresh_marks(now.timestamp(), settings.price_max_age)
        # Entry rules: those symbols are bought when their signal fires (runtime/signals.py).
        awaiting = signal_phases.awaiting_at_intake(info)
        bought = signal_phases.without_symbols(strategy, awaiting)
        plan = plan_initial_orders(
            bought,
            marks,
            settings.limits,
            execution_id,
            1,
            available_exposure=available_exposure(step),
        )
        step.funded = plan.funded
        step.requested = _requested(bought, marks, settings.limits)
        for event in plan.events:
            step.risk(event)
        step.gate(plan.intents)
        step.emit(
            msg.execution_started(
                runner.context,
                at=now,
                initial_orders=[*step.intents, *step.model.plans.deferred],
                awaiting_entry=awaiting if info.rules is not None else None,
            ),
            first=True,
        )
        if step.funded < 1:
            step.events[0] = {
                **step.events[0],
                "funded_fraction": plan.funded.quantize(Decimal("0.0001")),
            }
        step.create = NewExecution(
            execution_id=execution_id,
            strategy_id=strategy.strategy_id,
            user_id=strategy.user_id,
            approved_at=strategy.approved_at,
            config=config,
            initial_capital=strategy.config.initial_capital,
            started_at=now,
            state=ExecutionState.initial(strategy.config.initial_capital),
        )
        step.published_at = published_at
        return step


class _Planned:
    """The exposure a batch's steps see: the ledger's totals plus the buys planned before
    them in the same batch (they are not in the ledger until the batch commits)."""

    def __init__(self, fleet: FleetExposure) -> None:
        self._fleet = fleet
        self._planned = ZERO
        self._by_user: dict[uuid.UUID, Decimal] = {}

    def add(self, user_id: uuid.UUID, buys: Decimal) -> None:
        self._planned += buys
        self._by_user[user_id] = self._by_user.get(user_id, ZERO) + buys

    def others(self, execution_id: uuid.UUID) -> Decimal:
        return self._fleet.others(execution_id) + self._planned

    def user_others(self, user_id: uuid.UUID, execution_id: uuid.UUID) -> Decimal:
        return self._fleet.user_others(user_id, execution_id) + self._by_user.get(user_id, ZERO)


@dataclass(frozen=True, slots=True)
class _Refused:
    item: IncomingStrategy
    reason: str
    event: OutboxEvent


def _requested(
    strategy: ApprovedStrategy, marks: Mapping[str, Decimal], limits: RiskLimits
) -> Decimal:
    """What the strategy's first orders would take with the capacity unlimited."""
    weights = effective_weights(strategy, limits)
    capital = strategy.config.initial_capital
    return sum((capital * w for s, w in weights.items() if s in marks), ZERO)


def _refusal(step: Step, item: IncomingStrategy, minimum: Decimal) -> _Refused:
    """A strategy the capacity cannot fund: refused with an event (and a dead letter)."""
    available = step.requested * step.funded
    reason = (
        f"config.initial_capital: the exposure capacity left ({available:.2f}) funds "
        f"{step.funded:.2%} of the first orders ({step.requested:.2f}); at least "
        f"{minimum:.0%} is needed (risk.min_funded_fraction)"
    )
    payload = msg.execution_refused(
        step.runner.context,
        at=step.now,
        reason_code="insufficient_capacity",
        reason=reason,
        requested=step.requested,
        available=available,
        funded_fraction=step.funded.quantize(Decimal("0.0001")),
    )
    event = OutboxEvent(
        event_id=uuid.uuid5(step.execution_id, "event:refused"),
        execution_id=step.execution_id,
        user_id=step.info.user_id,
        key=step.info.key,
        event_type=str(payload["type"]),
        payload=payload,
    )
    return _Refused(item, reason, event)


def _fingerprint(strategy: ApprovedStrategy) -> tuple[object, ...]:
    return (strategy.user_id, strategy.approved_at, _canonical(strategy.config.to_json()))


def _stored_fingerprint(record: ExecutionRecord) -> tuple[object, ...]:
    return (record.user_id, record.approved_at, _canonical(record.config))


def _canonical(config: object) -> str:
    """The config's content whatever its key order: PostgreSQL's JSONB gives a stored
    config back with its keys in an order of its own, and a redelivered message must
    compare equal to the execution it created (a replay, not a conflict)."""
    return msg.encode_json(_keys_sorted(config))


def _keys_sorted(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _keys_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_keys_sorted(item) for item in value]
    return value
