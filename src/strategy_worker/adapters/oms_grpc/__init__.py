"""OMS over gRPC: `OmsGrpcClient` (ports.OmsGateway) and its configuration."""

from strategy_worker.adapters.oms_grpc.breaker import BreakerState, CircuitBreaker
from strategy_worker.adapters.oms_grpc.client import RETRYABLE_CODES, OmsCallError, OmsGrpcClient
from strategy_worker.adapters.oms_grpc.config import (
    BreakerConfig,
    OmsClientConfig,
    RetryConfig,
    TlsConfig,
)

__all__ = [
    "RETRYABLE_CODES",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "OmsCallError",
    "OmsClientConfig",
    "OmsGrpcClient",
    "RetryConfig",
    "TlsConfig",
]
