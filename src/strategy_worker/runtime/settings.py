"""The runtime's own frozen settings, derived once from `WorkerConfig` at startup."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from strategy_worker.config import RiskSection, WorkerConfig
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import MAX_MESSAGE_BYTES, ProtectionPlacement


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeSettings:
    """Cadences, policies and limits the execution lifecycle runs by."""

    owner_id: str
    """This worker's identity in leases (stable across restarts on one host by default)."""
    limits: RiskLimits
    position_check_interval: float = 60.0
    rebalance_interval: float = 300.0
    drift_threshold: Decimal = Decimal("0.05")
    shutdown_policy: Literal["close", "handover"] = "close"
    grace_period: float = 30.0
    lease_seconds: float = 15.0
    heartbeat: float = 5.0
    reconcile_interval: float = 60.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """Size limit of one approved message (`kafka.max_message_bytes`, the consumer's too)."""
    close_timeout: float = 10.0
    """How long a stop waits (real seconds) for its closing orders to fill."""
    ledger_audit_interval: float = 300.0
    """Seconds between audits of the risk ledger against orders and positions."""
    outbox_retention: float = 86400.0
    """Seconds a published event stays in the outbox (followers may replay from it)."""
    price_max_age: float = 120.0
    """Seconds a mark stays current enough to size an order at it (`redis.price_max_age`)."""
    max_executions: int = 100_000
    """Upper bound on executions one worker takes over (lease acquisition batch limit)."""
    loop_lag_interval: float | None = 0.05
    """Seconds between event-loop lag samples (`strategy_event_loop_lag_seconds`); None
    samples nothing (a virtual-time loop has no lag to see)."""
    bar_clock_skew: float = 5.0
    """Seconds a bar's end may be ahead of the clock and still count as closed
    (`signals.max_clock_skew`)."""


def risk_limits_from(section: RiskSection) -> RiskLimits:
    """The domain's limits from the config's `risk` section (spec keys)."""
    return RiskLimits(
        min_order_value=section.min_order_value,
        max_order_value=section.max_order_value,
        max_position_size=section.max_position_size,
        position_warning_ratio=section.warning_ratio,
        max_total_exposure=section.max_total_exposure,
        max_user_exposure=section.max_user_exposure,
        min_funded_fraction=section.min_funded_fraction,
        max_daily_loss=section.max_daily_loss,
        max_daily_loss_amount=section.max_daily_loss_amount,
        stop_loss_pct=section.stop_loss_pct,
        stop_loss_buffer=section.stop_loss_buffer,
        execution_orders_per_second=section.max_orders_per_minute / 60,
        execution_order_burst=section.execution_order_burst,
        worker_orders_per_second=float(section.max_orders_per_second),
        worker_order_burst=section.worker_order_burst,
        trading_day_start=section.trading_day_start,
        slippage_reserve_bps=section.slippage_reserve_bps,
        fee_reserve_bps=section.fee_reserve_bps,
        fee_reserve_per_order=section.fee_reserve_per_order,
        trailing_stop_pct=section.trailing_stop_pct,
        take_profit_pct=section.take_profit_pct,
        protection=ProtectionPlacement(section.protection),
        protection_limit_offset_pct=section.protection_limit_offset_pct,
        protection_native_grace=section.protection_native_grace,
    )


def default_owner_id() -> str:
    """hostname-pid: unique among live workers, readable in the leases table."""
    return f"{socket.gethostname()}-{os.getpid()}"


def settings_from(config: WorkerConfig) -> RuntimeSettings:
    ex = config.execution
    return RuntimeSettings(
        owner_id=config.worker_id or default_owner_id(),
        limits=risk_limits_from(config.risk),
        position_check_interval=ex.position_check_interval,
        rebalance_interval=ex.rebalance_interval,
        drift_threshold=ex.drift_threshold,
        shutdown_policy=ex.shutdown_policy,
        grace_period=ex.grace_period,
        lease_seconds=ex.lease_seconds,
        heartbeat=ex.heartbeat,
        reconcile_interval=ex.reconcile_interval,
        max_message_bytes=config.kafka.max_message_bytes,
        close_timeout=ex.close_timeout,
        price_max_age=config.redis.price_max_age,
        bar_clock_skew=config.signals.max_clock_skew,
    )
