"""Errors of the PostgreSQL adapter; messages are one line and never contain a password."""

from __future__ import annotations

from strategy_worker.errors import StoreError


class DatabaseUnreachableError(StoreError):
    """The server did not answer (refused, timed out, starting up); retrying may help."""

    retryable = True


class DatabaseAccessError(StoreError):
    """The server answered but refused us (bad password, unknown database or user)."""


class MigrationError(StoreError):
    """The schema cannot be brought to the version this code needs (changed or unknown file)."""
