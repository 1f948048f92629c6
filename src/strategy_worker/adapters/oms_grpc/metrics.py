"""Prometheus metrics of the OMS client, all prefixed `oms_client_`.

One set per CollectorRegistry, so several clients share it and tests pass their own registry.
"""

from __future__ import annotations

from typing import ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class OmsClientMetrics:
    """calls (per attempt, by status code), retries, failures (per call), latency, breaker."""

    _by_registry: ClassVar[dict[int, tuple[CollectorRegistry, OmsClientMetrics]]] = {}

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = Counter(
            "oms_client_calls_total",
            "OMS gRPC call attempts by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.retries = Counter(
            "oms_client_retries_total",
            "OMS gRPC call attempts retried after a retryable failure",
            ["method", "code"],
            registry=registry,
        )
        self.failures = Counter(
            "oms_client_failures_total",
            "OMS gRPC calls that failed for good (after retries, or refused by the breaker)",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "oms_client_call_duration_seconds",
            "Duration of one OMS gRPC call attempt",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.breaker_state = Gauge(
            "oms_client_breaker_state",
            "OMS circuit breaker state: 0 closed, 1 open, 2 half-open",
            registry=registry,
        )
        self.stream_reconnects = Counter(
            "oms_client_stream_reconnects_total",
            "Reconnects of the execution report stream",
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> OmsClientMetrics:
        """The metrics registered in `registry` (the global one by default), made once."""
        target = REGISTRY if registry is None else registry
        entry = cls._by_registry.get(id(target))
        if entry is None or entry[0] is not target:
            entry = (target, cls(target))
            cls._by_registry[id(target)] = entry
        return entry[1]
