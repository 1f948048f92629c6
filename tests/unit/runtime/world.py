"""Helpers for runtime tests on the in-memory world (`strategy_worker.testing.rig.Rig`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from strategy_worker.runtime.intake import IncomingStrategy
from strategy_worker.runtime.wiring import App
from strategy_worker.testing.rig import Rig
from strategy_worker.testing.virtual_time import run_in_virtual_time

T = TypeVar("T")

PRICES: dict[str, Decimal] = {
    "AAPL": Decimal("100.00"),
    "MSFT": Decimal("200.00"),
    "GOOGL": Decimal("50.00"),
    "AMZN": Decimal("150.00"),
}
USER = uuid.UUID("660e8400-e29b-41d4-a716-446655440000")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a scenario on a fresh virtual-time loop (deterministic, instant)."""

    async def wrapped() -> T:
        return await main()

    return run_in_virtual_time(wrapped)


def approved(
    allocation: Mapping[str, str],
    *,
    capital: str = "100000",
    stop_loss: str | None = None,
    strategy_id: uuid.UUID | None = None,
    user_id: uuid.UUID = USER,
    timestamp: str = "2024-01-02T14:00:00Z",
    name: str = "test",
    entry_rules: Mapping[str, Any] | None = None,
    exit_rules: Mapping[str, Any] | None = None,
    strategy_type: str = "MOMENTUM",
    risk: Mapping[str, str] | None = None,
) -> bytes:
    """A `strategy.approved` message with money as exact JSON numbers (`risk`: more
    `risk_params`, e.g. trailing_stop_pct; `protection` stays a string)."""
    config: dict[str, Any] = {
        "name": name,
        "type": strategy_type,
        "symbols": sorted(allocation),
        "allocation": {s: f"@{w}@" for s, w in allocation.items()},
        "initial_capital": f"@{capital}@",
    }
    params: dict[str, str] = {}
    if stop_loss is not None:
        params["stop_loss_pct"] = f"@{stop_loss}@"
    for key, value in (risk or {}).items():
        params[key] = value if key == "protection" else f"@{value}@"
    if params:
        config["risk_params"] = params
    if entry_rules is not None:
        config["entry_rules"] = entry_rules
    if exit_rules is not None:
        config["exit_rules"] = exit_rules
    message = {
        "type": "strategy.approved",
        "strategy_id": str(strategy_id or uuid.uuid4()),
        "user_id": str(user_id),
        "timestamp": timestamp,
        "config": config,
    }
    return json.dumps(message).replace('"@', "").replace('@"', "").encode()


def control(execution_id: uuid.UUID, action: str, *, user_id: uuid.UUID = USER) -> bytes:
    return json.dumps(
        {
            "type": "strategy.control",
            "request_id": str(uuid.uuid4()),
            "execution_id": str(execution_id),
            "user_id": str(user_id),
            "action": action,
            "timestamp": "2024-01-02T14:00:00Z",
        }
    ).encode()


async def admit(app: App, *payloads: bytes) -> list[uuid.UUID]:
    """Hand messages to the worker as one poll; returns the executions it created."""
    before = set(app.worker.book.ids())
    await app.worker.handle_strategies([IncomingStrategy(p, "test") for p in payloads])
    return [e for e in app.worker.book.ids() if e not in before]


def event_types(rig: Rig, execution_id: uuid.UUID) -> list[str]:
    return [
        p.event.event_type.removeprefix("strategy.execution.")
        for p in rig.events.published
        if p.event.execution_id == execution_id
    ]


def orders(rig: Rig, execution_id: uuid.UUID) -> Sequence[Any]:
    ex = rig.db.executions[execution_id]
    return sorted((rig.db.orders[c] for c in ex.order_ids), key=lambda o: o.intent_seq)


def risk_types(rig: Rig, execution_id: uuid.UUID) -> list[str]:
    return [
        r.event_type
        for r in sorted(rig.db.risk_events.values(), key=lambda r: r.occurred_at)
        if r.execution_id == execution_id
    ]


def decisions(rig: Rig, execution_id: uuid.UUID) -> list[Any]:
    """The execution's recorded signal decisions, by bar then rule."""
    found = [d for key, d in rig.db.decisions.items() if key[0] == execution_id]
    return sorted(found, key=lambda d: (d.bar_start, str(d.rule), d.symbol))


def published(rig: Rig, execution_id: uuid.UUID, kind: str) -> list[Mapping[str, Any]]:
    """Payloads of the execution's published events of one type (`signal_decision`, ...)."""
    return [
        p.event.payload
        for p in rig.events.published
        if p.event.execution_id == execution_id
        and p.event.event_type == f"strategy.execution.{kind}"
    ]
