"""Intake of `strategy.approved` messages, a whole Kafka poll at a time.

For a batch: parse and dead-letter what is malformed, drop replays (one query), read the
prices of every symbol once, size and risk-check each strategy, then create all executions
and their first order intents in one transaction. Only after that commit are the
`started` events published and the orders sent (in the background, per execution); the
caller may then commit the offsets. One commit per poll instead of one per message is what
lets intake keep up with a burst of approvals.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from strategy_worker import messages as msg
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.order_state import OrderState
from strategy_worker.domain.orders import OrderIntent, Side
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.sizing import plan_initial_orders
from strategy_worker.domain.strategy import ApprovedStrategy, Rejection, parse_strategy_message
from strategy_worker.log import get_logger
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import Outbox, info_from_config
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    ExecutionDraft,
    ExecutionStatus,
    Fence,
    NewExecution,
)

if TYPE_CHECKING:
    from strategy_worker.runtime.worker import Worker

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IncomingStrategy:
    """One raw message and where it came from (`topic/partition@offset`, or a file)."""

    payload: bytes
    source: str
    published_at: float | None = None
    """Epoch seconds the producer stamped on it, for the publish-to-order histogram."""


@dataclass(slots=True)
class _Admitted:
    strategy: ApprovedStrategy
    runner: ExecutionRunner
    intents: list[OrderIntent]
    out: Outbox
    published_at: float | None
    config: dict[str, object]


async def admit_strategies(worker: Worker, batch: Sequence[IncomingStrategy]) -> None:
    """Handle a batch of approved-strategy messages; returns once every execution it created
    is durable with its intents (orders go out in the background)."""
    parsed: list[tuple[ApprovedStrategy, IncomingStrategy]] = []
    seen: set[uuid.UUID] = set()
    for item in batch:
        result = parse_strategy_message(item.payload, max_bytes=worker.settings.max_message_bytes)
        if isinstance(result, Rejection):
            await worker.reject(item.payload, result.code, str(result), item.source)
            continue
        if result.execution_id in seen or result.execution_id in worker.runners:
            _log.info("duplicate strategy message ignored", execution_id=str(result.execution_id))
            continue
        seen.add(result.execution_id)
        parsed.append((result, item))
    if not parsed:
        return
    existing = await worker.store.existing_executions([s.execution_id for s, _ in parsed])
    for strategy, _ in parsed:
        if strategy.execution_id in existing:
            _log.info("duplicate strategy message ignored", execution_id=str(strategy.execution_id))
    fresh = [(s, item) for s, item in parsed if s.execution_id not in existing]
    if not fresh:
        return
    prices = await worker.prices.get_prices(
        sorted({sym for s, _ in fresh for sym in s.config.symbols})
    )
    admitted: list[_Admitted] = []
    exposure = worker.exposure
    for strategy, item in fresh:
        missing = [sym for sym in strategy.config.symbols if sym not in prices]
        if missing:
            reason = f"config.symbols: no price for {missing[0]}"
            await worker.reject(item.payload, "unknown_symbol", reason, item.source)
            continue
        entry = _plan(worker, strategy, prices, exposure, item.published_at)
        exposure += _buys(entry.intents)
        admitted.append(entry)
    if not admitted:
        return
    now = worker.clock.now()
    created = await worker.store.create_executions(
        [
            ExecutionDraft(
                execution=NewExecution(
                    execution_id=a.strategy.execution_id,
                    strategy_id=a.strategy.strategy_id,
                    user_id=a.strategy.user_id,
                    approved_at=a.strategy.approved_at,
                    config=a.config,
                    initial_capital=a.strategy.config.initial_capital,
                    started_at=now,
                    state=a.runner.state(),
                ),
                intents=a.intents,
                next_intent_seq=a.runner.next_seq,
            )
            for a in admitted
        ],
        owner_id=worker.settings.owner_id,
        lease_seconds=worker.settings.lease_seconds,
    )
    # Concurrently: each `started` publish waits for the Kafka ack; per execution, the
    # event still goes out before its orders (which are sent only after it).
    await asyncio.gather(
        *(_start(worker, a, now) for a in admitted if a.strategy.execution_id in created)
    )


def _plan(
    worker: Worker,
    strategy: ApprovedStrategy,
    prices: Mapping[str, Decimal],
    exposure: Decimal,
    published_at: float | None,
) -> _Admitted:
    """Size and risk-check one strategy into a runner and its numbered first intents."""
    execution_id = strategy.execution_id
    config = strategy.config.to_json()
    info = info_from_config(
        execution_id=execution_id,
        strategy_id=strategy.strategy_id,
        user_id=strategy.user_id,
        config=config,
        initial_capital=strategy.config.initial_capital,
        worker_limits=worker.settings.limits,
    )
    plan = plan_initial_orders(
        strategy,
        prices,
        worker.settings.limits,
        execution_id,
        1,
        available_exposure=worker.settings.limits.max_total_exposure - exposure,
    )
    runner = ExecutionRunner(
        info=info,
        status=ExecutionStatus.ACTIVE,
        portfolio=Portfolio(strategy.config.initial_capital),
        risk=worker.risk_manager.new_execution(
            execution_id,
            start_equity=strategy.config.initial_capital,
            risk_params=strategy.config.risk_params,
        ),
        next_seq=1,
        fence=Fence(owner_id=worker.settings.owner_id, epoch=FIRST_LEASE_EPOCH),
        risk_manager=worker.risk_manager,
        clock=worker.clock,
        **worker.runner_deps(),
    )
    runner.valuate(prices)
    out = Outbox()
    for event in plan.events:
        runner.risk_row(event, out)
    intents = runner.renumber(runner.gate(plan.intents, out))
    runner.next_seq = len(intents) + 1
    return _Admitted(strategy, runner, intents, out, published_at, config)


async def _start(worker: Worker, entry: _Admitted, now: datetime) -> None:
    """A created execution: register it, publish `started` and its risk rows, send orders."""
    runner, intents = entry.runner, entry.intents
    for intent in intents:
        runner.orders[intent.client_order_id] = OrderState(intent)
    worker.runners[runner.execution_id] = runner
    worker.add_exposure(_buys(intents))
    worker.metrics.executions_active.set(len(worker.runners))
    entry.out.events.insert(
        0, msg.execution_started(runner.context, at=now, initial_orders=intents)
    )
    async with runner.lock:
        # Sent at once; the answers (and their events) wait for this lock, after `started`.
        runner.first_orders_answered.clear()
        worker.spawn(
            _submit_first(worker, runner, intents, entry.published_at),
            f"submit-{runner.execution_id}",
        )
        await runner.flush(entry.out)
    _log.info(
        "execution started",
        execution_id=str(runner.execution_id),
        strategy_id=str(entry.strategy.strategy_id),
        orders=len(intents),
    )


async def _submit_first(
    worker: Worker, runner: ExecutionRunner, intents: list[OrderIntent], published_at: float | None
) -> None:
    """Send an execution's first orders (recorded already), guarded."""
    await worker.guard(runner, _send_first(runner, intents))
    elapsed = seconds_since(published_at)
    if elapsed is not None:
        worker.metrics.publish_to_order_seconds.observe(elapsed)


async def _send_first(runner: ExecutionRunner, intents: list[OrderIntent]) -> None:
    # The OMS call needs no lock (the intents are durable, the OMS idempotent on their
    # ids), so the orders leave while `started` is being queued; the answers wait for the
    # lock, hence their events follow `started`.
    try:
        views = await runner.send(intents)
        if views is None:
            return
        async with runner.lock:
            out = Outbox()
            await runner.accept(views, out)
            await runner.flush(out)
    finally:
        runner.first_orders_answered.set()


def _buys(intents: Sequence[OrderIntent]) -> Decimal:
    return sum((i.notional for i in intents if i.side is Side.BUY), ZERO)


def seconds_since(published_at: float | None) -> float | None:
    """Publish-to-now in seconds, or None when the producer's stamp is unknown or ahead."""
    if published_at is None:
        return None
    elapsed = time.time() - published_at
    return elapsed if elapsed >= 0 else None
