"""Prometheus metrics of the worker, with the spec's names, in one object per registry.

Metric values are floats by Prometheus's nature; they are observability only and never feed
back into a money decision. Tests pass a fresh `CollectorRegistry` so counts start at zero.
"""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Order round trips and publish-to-order latency: milliseconds to tens of seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CYCLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Every metric the worker exports; the runtime and adapters update them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # The spec's five.
        self.executions_active = Gauge(
            "strategy_executions_active", "Executions currently running", registry=registry
        )
        self.orders_submitted = Counter(
            "strategy_orders_submitted_total", "Orders submitted to the OMS", registry=registry
        )
        self.orders_filled = Counter(
            "strategy_orders_filled_total", "Orders completely filled", registry=registry
        )
        self.pnl_total = Gauge(
            "strategy_pnl_total", "Total P&L across all running strategies", registry=registry
        )
        self.risk_violations = Counter(
            "risk_violations_total",
            "Risk events recorded (denials, warnings, halts, stop-losses)",
            ["event_type", "severity"],
            registry=registry,
        )
        # Input handling.
        self.messages_consumed = Counter(
            "strategy_messages_consumed_total",
            "Kafka records handed to a handler",
            ["topic"],
            registry=registry,
        )
        self.messages_dead_lettered = Counter(
            "strategy_messages_dead_lettered_total",
            "Records written to the dead-letter topic, by reason code",
            ["reason"],
            registry=registry,
        )
        self.orders_rejected = Counter(
            "strategy_orders_rejected_total",
            "Orders refused, by source (risk or oms)",
            ["source"],
            registry=registry,
        )
        self.prices_skipped = Counter(
            "strategy_prices_skipped_total",
            "Prices ignored by the price source, by reason (malformed, stale)",
            ["reason"],
            registry=registry,
        )
        # Events out (the buffer in front of Kafka).
        self.events_pending = Gauge(
            "strategy_events_pending",
            "Execution events queued for Kafka and not yet acknowledged",
            registry=registry,
        )
        self.event_publish_failures = Counter(
            "strategy_event_publish_failures_total",
            "Attempts to publish queued events that failed and will be retried",
            registry=registry,
        )
        self.events_dropped = Counter(
            "strategy_events_dropped_total",
            "Events Kafka refused for good (never retried), each logged",
            registry=registry,
        )
        # Latencies.
        self.publish_to_order_seconds = Histogram(
            "strategy_publish_to_order_seconds",
            "From the approved message's timestamp to the first order at the OMS",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.order_round_trip_seconds = Histogram(
            "strategy_order_round_trip_seconds",
            "OMS submit call round trip",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.monitor_cycle_seconds = Histogram(
            "strategy_monitor_cycle_seconds",
            "Duration of one position-monitor cycle of one execution",
            buckets=_CYCLE_BUCKETS,
            registry=registry,
        )
        self.rebalance_seconds = Histogram(
            "strategy_rebalance_seconds",
            "Duration of one rebalance cycle of one execution",
            buckets=_CYCLE_BUCKETS,
            registry=registry,
        )
        # Reconciliation: local minus OMS quantity, per execution and symbol (0 = agreed).
        self.position_difference = Gauge(
            "strategy_reconciliation_position_difference",
            "Local minus OMS position quantity found by the last reconciliation",
            ["execution_id", "symbol"],
            registry=registry,
        )
        self._difference_labels: dict[str, set[str]] = {}
        # Protective orders: open positions with configured protection but none live
        # (sum of ProtectionBook.unprotected over the running executions; expected 0).
        self.positions_unprotected = Gauge(
            "strategy_positions_unprotected",
            "Open positions whose configured protection has no live leg or exit",
            registry=registry,
        )

    def record_risk_event(self, event_type: str, severity: str) -> None:
        self.risk_violations.labels(event_type=event_type, severity=severity).inc()

    def record_dead_letter(self, reason_code: str) -> None:
        self.messages_dead_lettered.labels(reason=reason_code).inc()

    def set_pnl_total(self, total: Decimal) -> None:
        self.pnl_total.set(float(total))

    def set_position_difference(self, execution_id: str, symbol: str, difference: Decimal) -> None:
        self.position_difference.labels(execution_id=execution_id, symbol=symbol).set(
            float(difference)
        )
        self._difference_labels.setdefault(execution_id, set()).add(symbol)

    def forget_execution(self, execution_id: str) -> None:
        """Drop an ended execution's labelled series, so cardinality stays bounded."""
        for symbol in self._difference_labels.pop(execution_id, set()):
            self.position_difference.remove(execution_id, symbol)
