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
# Event-loop lag: fine below 10 ms, where a p99 of publish-to-order latency must stay.
_LAG_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


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
            "Risk events of severity WARNING or CRITICAL (denials, warnings, halts, stop-outs)",
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
        # Market bars and signals (docs/signals.md).
        self.bars_received = Counter(
            "strategy_bars_received_total",
            "Well-formed bars received, by source (kafka, prices)",
            ["source"],
            registry=registry,
        )
        self.bars_ignored = Counter(
            "strategy_bars_ignored_total",
            "Bars not used, by reason (malformed codes, duplicate, late, not_closed, ...)",
            ["reason"],
            registry=registry,
        )
        self.signal_decisions = Counter(
            "strategy_signal_decisions_total",
            "Signal decisions recorded, by rule, outcome and gate",
            ["rule", "outcome", "gate"],
            registry=registry,
        )
        # Events out (the outbox relay).
        self.event_publish_failures = Counter(
            "strategy_event_publish_failures_total",
            "Attempts to publish outbox events that failed and will be retried",
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
        self.event_loop_lag_seconds = Histogram(
            "strategy_event_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every 50 ms: how long ready work "
            "waited behind synchronous work (runtime/loop_lag.py)",
            buckets=_LAG_BUCKETS,
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
        # Reconciliation: how many positions disagree with the OMS. No execution or symbol
        # label: 10,000 executions x their symbols would be that many series; which ones
        # disagree is in the log and the risk events.
        self.position_difference = Gauge(
            "strategy_reconciliation_position_difference",
            "Positions (execution x symbol) whose local quantity differed from the OMS's "
            "at their last reconciliation",
            registry=registry,
        )
        self._differing: dict[str, set[str]] = {}
        self._differing_count = 0
        # The runtime spine: duplicates, outbox, executions that need attention.
        self.messages_duplicate = Counter(
            "strategy_messages_duplicate_total",
            "Approved messages seen before: replays (ignored) and conflicts (dead-lettered)",
            ["kind"],
            registry=registry,
        )
        self.outbox_published = Counter(
            "strategy_outbox_published_total",
            "Outbox events the relay published (at least once; drop repeats by event-id)",
            registry=registry,
        )
        self.outbox_lag_seconds = Gauge(
            "strategy_outbox_lag_seconds",
            "Age of the oldest outbox event not yet published (0 when none waits)",
            registry=registry,
        )
        self.executions_dirty = Gauge(
            "strategy_executions_dirty",
            "Executions waiting to be reloaded after a commit of unknown outcome",
            registry=registry,
        )
        self.ledger_difference = Gauge(
            "strategy_risk_ledger_difference",
            "Sum of |ledger - recomputation| the last audit found (then repaired; expected 0)",
            registry=registry,
        )
        self.strategies_unfunded = Counter(
            "strategy_unfunded_total",
            "Strategies the remaining exposure capacity could not fund in full, by outcome "
            "(scaled: started scaled down; refused: insufficient_capacity)",
            ["outcome"],
            registry=registry,
        )
        self.stops_incomplete = Gauge(
            "strategy_stops_incomplete",
            "Stopping executions still holding positions after several closing rounds",
            registry=registry,
        )
        # Protective orders: open positions with configured protection but none live
        # (sum of ProtectionBook.unprotected over the running executions; expected 0).
        self.positions_unprotected = Gauge(
            "strategy_positions_unprotected",
            "Open positions whose configured protection has no live leg or exit",
            registry=registry,
        )

    def record_risk_event(self, event_type: str, severity: str) -> None:
        """Count a risk event as a violation: WARNING and CRITICAL only (INFO events such as
        DUST_SKIPPED or ORDER_SPLIT are routine and violate nothing)."""
        if severity == "INFO":
            return
        self.risk_violations.labels(event_type=event_type, severity=severity).inc()

    def record_duplicate(self, kind: str) -> None:
        self.messages_duplicate.labels(kind=kind).inc()

    def record_dead_letter(self, reason_code: str) -> None:
        self.messages_dead_lettered.labels(reason=reason_code).inc()

    def set_pnl_total(self, total: Decimal) -> None:
        self.pnl_total.set(float(total))

    def set_position_difference(self, execution_id: str, symbol: str, difference: Decimal) -> None:
        """Record one position's last reconciliation (local minus OMS quantity; 0 = agreed)."""
        symbols = self._differing.get(execution_id)
        if difference:
            if symbols is None:
                symbols = self._differing[execution_id] = set()
            if symbol not in symbols:
                symbols.add(symbol)
                self._differing_count += 1
        elif symbols is not None and symbol in symbols:
            symbols.discard(symbol)
            self._differing_count -= 1
            if not symbols:
                del self._differing[execution_id]
        self.position_difference.set(self._differing_count)

    def forget_execution(self, execution_id: str) -> None:
        """An execution ended here (or moved to another worker): its positions no longer count."""
        self._differing_count -= len(self._differing.pop(execution_id, ()))
        self.position_difference.set(self._differing_count)
