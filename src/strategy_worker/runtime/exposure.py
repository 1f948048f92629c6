"""The fleet's exposure as this worker knows it: the risk ledger's totals (fleet, users)
as the last commit, refresh or refusal returned them.

The pre-trade check of a step sees `others(execution)` (the fleet's total without what this
execution holds in the ledger) plus the step's own exposure; the commit then moves the
ledger and checks the caps atomically in PostgreSQL, so a view that is behind (another
worker committed meanwhile) can only cost a retry, never a buy past the cap.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal

from strategy_worker.domain.money import ZERO
from strategy_worker.runtime.book import ExecutionBook
from strategy_worker.store import FLEET, LedgerScope

_FULL = Decimal("Infinity")


class FleetExposure:
    """Ledger totals seen last (see the module docstring); the `ExposureView` of steps."""

    def __init__(self, book: ExecutionBook) -> None:
        self._book = book
        self._totals: dict[LedgerScope, Decimal] = {FLEET: ZERO}
        self.full = False
        """Set for a last attempt after repeated refusals: every new buy is denied."""

    def observe(self, totals: Mapping[LedgerScope, Decimal]) -> None:
        """Totals the store returned (a commit, a refresh, a refusal)."""
        self._totals.update(totals)

    @property
    def fleet(self) -> Decimal:
        return self._totals.get(FLEET, ZERO)

    def user(self, user_id: uuid.UUID) -> Decimal:
        return self._totals.get(("user", str(user_id)), ZERO)

    def _held(self, execution_id: uuid.UUID) -> Decimal:
        runner = self._book.get(execution_id)
        return runner.ledger_exposure if runner is not None else ZERO

    def others(self, execution_id: uuid.UUID) -> Decimal:
        """The fleet's total without what this execution holds in the ledger."""
        if self.full:
            return _FULL
        return self.fleet - self._held(execution_id)

    def user_others(self, user_id: uuid.UUID, execution_id: uuid.UUID) -> Decimal:
        """The user's total without what this execution holds in the ledger."""
        if self.full:
            return _FULL
        return self.user(user_id) - self._held(execution_id)
