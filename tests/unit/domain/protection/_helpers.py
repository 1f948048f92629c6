"""Builders shared by the protection tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from strategy_worker.domain.orders import OmsCapabilities, OrderType
from strategy_worker.domain.protection import ProtectionBook, ProtectionSpec
from strategy_worker.domain.strategy import ProtectionPlacement

EXECUTION_ID = uuid.UUID("770e8400-e29b-41d4-a716-446655440000")
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
D = Decimal

FULL = OmsCapabilities(
    order_types=frozenset(OrderType),
    oco_groups=True,
    brackets=True,
    reduce_only=True,
    order_groups=True,
    contract_version="1.1",
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(
    *,
    stop: str | None = "0.05",
    trail: str | None = None,
    take: str | None = None,
    offset: str | None = None,
    placement: ProtectionPlacement = ProtectionPlacement.EMULATED,
    grace: float = 5.0,
) -> ProtectionSpec:
    return ProtectionSpec(
        stop_loss_pct=None if stop is None else D(stop),
        trailing_stop_pct=None if trail is None else D(trail),
        take_profit_pct=None if take is None else D(take),
        limit_offset_pct=None if offset is None else D(offset),
        placement=placement,
        native_grace_s=grace,
    )


def book(
    the_spec: ProtectionSpec | None = None, *, capabilities: OmsCapabilities | None = None
) -> ProtectionBook:
    return ProtectionBook(EXECUTION_ID, the_spec or spec(), capabilities=capabilities)
