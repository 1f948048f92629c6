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


def test_risk_violations_count_warnings_and_critical_events_but_not_info() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    metrics.record_risk_event("DUST_SKIPPED", "INFO")
    metrics.record_risk_event("ORDER_SPLIT", "INFO")
    metrics.record_risk_event("ORDER_DENIED", "WARNING")
    metrics.record_risk_event("STOP_LOSS_TRIGGERED", "CRITICAL")

    violations = {
        labels: value
        for (name, labels), value in samples(registry).items()
        if name == "risk_violations_total"
    }
    assert violations == {
        (("event_type", "ORDER_DENIED"), ("severity", "WARNING")): 1,
        (("event_type", "STOP_LOSS_TRIGGERED"), ("severity", "CRITICAL")): 1,
    }


def _reconciliation(registry: CollectorRegistry) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: value
        for (name, labels), value in samples(registry).items()
        if name == "strategy_reconciliation_position_difference"
    }


def test_reconciliation_gauge_has_no_per_execution_labels_at_fleet_scale() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    for n in range(10_000):
        metrics.set_position_difference(f"e-{n}", "AAPL", Decimal(n % 3))

    # One series, whatever the fleet: the positions that disagree with the OMS.
    assert _reconciliation(registry) == {(): 6666}


def test_reconciliation_gauge_follows_agreement_and_forgotten_executions() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.set_position_difference("e-1", "AAPL", Decimal("5"))
    metrics.set_position_difference("e-1", "MSFT", Decimal("-2"))
    metrics.set_position_difference("e-2", "MSFT", Decimal("1"))
    metrics.set_position_difference("e-2", "MSFT", Decimal("0"))  # reconciled since

    assert _reconciliation(registry) == {(): 2}

    metrics.forget_execution("e-1")

    assert _reconciliation(registry) == {(): 0}


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
