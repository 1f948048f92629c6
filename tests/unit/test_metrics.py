"""Metrics: the spec's exact names, exported from a fresh registry."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from strategy_worker.metrics import WorkerMetrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_spec_metric_names_are_exported() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    metrics.executions_active.set(2)
    metrics.orders_submitted.inc(3)
    metrics.orders_filled.inc()
    metrics.set_pnl_total(Decimal("-125.50"))
    metrics.record_risk_event("MAX_POSITION_SIZE", "WARNING")
    metrics.record_dead_letter("invalid_json")

    found = samples(registry)
    assert found[("strategy_executions_active", ())] == 2
    assert found[("strategy_orders_submitted_total", ())] == 3
    assert found[("strategy_orders_filled_total", ())] == 1
    assert found[("strategy_pnl_total", ())] == -125.5
    key = (("event_type", "MAX_POSITION_SIZE"), ("severity", "WARNING"))
    assert found[("risk_violations_total", key)] == 1
    assert found[("strategy_messages_dead_lettered_total", (("reason", "invalid_json"),))] == 1


def test_forgotten_execution_drops_its_reconciliation_series() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.set_position_difference("e-1", "AAPL", Decimal("5"))
    metrics.set_position_difference("e-2", "MSFT", Decimal("0"))

    metrics.forget_execution("e-1")

    names = {labels for name, labels in samples(registry) if name.startswith("strategy_reconc")}
    assert names == {(("execution_id", "e-2"), ("symbol", "MSFT"))}


def test_two_registries_do_not_share_counts() -> None:
    first, second = WorkerMetrics(CollectorRegistry()), WorkerMetrics(CollectorRegistry())

    first.orders_submitted.inc()

    assert samples(second.registry)[("strategy_orders_submitted_total", ())] == 0


def test_unprotected_positions_gauge_is_exported_at_zero_until_set() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    assert registry.get_sample_value("strategy_positions_unprotected") == 0.0
    metrics.positions_unprotected.set(2)
    assert registry.get_sample_value("strategy_positions_unprotected") == 2.0
