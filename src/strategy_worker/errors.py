"""The one root exception of the project; retry behaviour travels as data on the error."""

from __future__ import annotations


class StrategyWorkerError(Exception):
    """Root of every error this project raises on purpose.

    `retryable` tells a caller whether the same call may succeed later (a timeout, a
    restarting server); a validation or configuration error is never retryable.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(StrategyWorkerError):
    """Invalid or unknown configuration; stops the worker at startup."""


class ValidationError(StrategyWorkerError):
    """Input that breaks the contract (a message, a request); never retried."""


class DomainError(StrategyWorkerError):
    """A call that breaks a domain invariant (e.g. an impossible order transition)."""


class TransientError(StrategyWorkerError):
    """An outside system is unavailable for now; the call may be retried."""

    retryable = True


class OmsError(StrategyWorkerError):
    """The OMS refused or failed a call; `retryable` says whether to try again."""


class CircuitOpenError(OmsError):
    """The OMS circuit breaker is open: calls fail fast until the probe succeeds."""

    retryable = True


class StoreError(StrategyWorkerError):
    """The persistent store failed a call; `retryable` says whether to try again."""
