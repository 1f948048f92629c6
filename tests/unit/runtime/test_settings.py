"""The runtime's settings and the mapping of the config's `risk` section onto RiskLimits."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from strategy_worker.config import RiskSection, WorkerConfig
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.runtime.settings import risk_limits_from, settings_from


def test_risk_limits_from_when_spec_defaults_then_spec_limits() -> None:
    limits = risk_limits_from(RiskSection())
    assert limits.max_total_exposure == Decimal("1000000.00")
    assert limits.max_position_size == Decimal("0.30")
    assert limits.max_daily_loss == Decimal("0.05")
    assert limits.max_daily_loss_amount == Decimal("50000.00")
    assert limits.min_order_value == Decimal("100.00")
    assert limits.max_order_value == Decimal("100000.00")
    assert limits.position_warning_ratio == Decimal("0.80")
    assert limits.stop_loss_buffer == Decimal("0.02")


def test_risk_limits_from_when_rates_configured_then_per_second_buckets() -> None:
    limits = risk_limits_from(RiskSection(max_orders_per_minute=120, max_orders_per_second=7))
    assert limits.execution_orders_per_second == 2.0
    assert limits.worker_orders_per_second == 7.0


def test_settings_from_when_worker_id_set_then_it_owns_the_leases() -> None:
    config = WorkerConfig.model_validate({"worker_id": "worker-a"})
    settings = settings_from(config)
    assert settings.owner_id == "worker-a"
    assert settings.position_check_interval == 60.0
    assert settings.rebalance_interval == 300.0
    assert settings.shutdown_policy == "close"


def test_settings_from_when_no_worker_id_then_hostname_pid() -> None:
    settings = settings_from(WorkerConfig())
    host, _, pid = settings.owner_id.rpartition("-")
    assert host
    assert pid.isdigit()


def test_risk_limits_from_when_worker_stop_loss_day_start_and_bursts_set_then_mapped() -> None:
    section = RiskSection.model_validate(
        {
            "stop_loss_pct": "0.07",
            "trading_day_start": "14:30",
            "execution_order_burst": 30,
            "worker_order_burst": 300,
        }
    )

    limits = risk_limits_from(section)

    assert limits.stop_loss_pct == Decimal("0.07")
    assert limits.trading_day_start == time(14, 30)
    assert (limits.execution_order_burst, limits.worker_order_burst) == (30, 300)


def test_risk_limits_from_when_defaults_then_documented_bursts_and_no_worker_stop_loss() -> None:
    limits = risk_limits_from(RiskSection())

    assert (limits.execution_order_burst, limits.worker_order_burst) == (100, 200)
    assert limits.stop_loss_pct is None
    assert limits.trading_day_start == time(0, 0)


def test_settings_from_when_kafka_message_limit_set_then_intake_uses_the_same_limit() -> None:
    config = WorkerConfig.model_validate({"kafka": {"max_message_bytes": 2048}})

    assert settings_from(config).max_message_bytes == 2048


def test_default_message_limit_is_one_for_the_consumer_and_the_parser() -> None:
    # The consumer dead-letters records above kafka.max_message_bytes unread; intake parses
    # with settings.max_message_bytes. They were 1 MiB and a hard-coded 64 KiB.
    config = WorkerConfig()

    assert config.kafka.max_message_bytes == settings_from(config).max_message_bytes == 65536


def test_risk_limits_from_when_cash_reserve_configured_then_sizing_and_checks_use_it() -> None:
    section = RiskSection.model_validate(
        {"slippage_reserve_bps": "25", "fee_reserve_bps": "0", "fee_reserve_per_order": "0.35"}
    )

    limits = risk_limits_from(section)

    assert (
        limits.slippage_reserve_bps,
        limits.fee_reserve_bps,
        limits.fee_reserve_per_order,
    ) == (Decimal(25), Decimal(0), Decimal("0.35"))
    assert risk_limits_from(RiskSection()).reserved_buy_cost(Decimal(10000)) == Decimal("10021.01")


def test_worker_default_stop_loss_protects_an_execution_whose_strategy_sets_none() -> None:
    # The key used to be refused, so no worker-default stop-loss could exist.
    import uuid
    from datetime import UTC, datetime

    from strategy_worker.domain.clock import ManualClock
    from strategy_worker.domain.risk import RiskManager
    from strategy_worker.domain.strategy import StrategyRiskParams

    config = WorkerConfig.model_validate({"risk": {"stop_loss_pct": "0.10"}})
    manager = RiskManager(
        settings_from(config).limits, ManualClock(datetime(2024, 1, 2, tzinfo=UTC))
    )

    loose = manager.new_execution(uuid.uuid4(), start_equity=Decimal(1000))
    tighter = manager.new_execution(
        uuid.uuid4(),
        start_equity=Decimal(1000),
        risk_params=StrategyRiskParams(stop_loss_pct=Decimal("0.05")),
    )

    assert loose.stops.stop_loss_pct == Decimal("0.10")
    assert tighter.stops.stop_loss_pct == Decimal("0.05")


def test_risk_limits_from_when_protection_keys_set_then_every_one_is_mapped() -> None:
    section = RiskSection.model_validate(
        {
            "trailing_stop_pct": "0.08",
            "take_profit_pct": "0.20",
            "protection": "emulated",
            "protection_limit_offset_pct": "0.01",
            "protection_native_grace": 2.5,
        }
    )

    limits = risk_limits_from(section)

    assert limits.trailing_stop_pct == Decimal("0.08")
    assert limits.take_profit_pct == Decimal("0.20")
    assert limits.protection is ProtectionPlacement.EMULATED
    assert limits.protection_limit_offset_pct == Decimal("0.01")
    assert limits.protection_native_grace == 2.5


def test_risk_limits_from_when_protection_keys_left_out_then_none_and_auto() -> None:
    limits = risk_limits_from(RiskSection())

    assert (limits.trailing_stop_pct, limits.take_profit_pct) == (None, None)
    assert limits.protection is ProtectionPlacement.AUTO
    assert limits.protection_limit_offset_pct is None
    assert limits.protection_native_grace == 5.0
