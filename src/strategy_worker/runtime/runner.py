"""One execution while this worker owns it: its facts, its committed model, its marks.

The runner performs no I/O and decides nothing itself: a `Step` (runtime/step.py) forks the
model, decides, and `Committer.commit` writes the decision in one transaction; only then is
the fork adopted (`adopt`). So what a runner holds is always what the store holds, and a
failed or cancelled commit leaves the runner as it was (or, when the outcome is unknown,
`dirty` until it is reloaded from the store).

Marks are observations, not commitments: they are kept here (with the instant they were
seen) and never need a commit of their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from decimal import Decimal

from strategy_worker import messages as msg
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.positions import Valuation
from strategy_worker.runtime.facts import ExecutionInfo
from strategy_worker.runtime.model import ExecutionModel
from strategy_worker.store import Fence


class ExecutionRunner:
    """An owned execution: `info` (immutable), `model` (as committed), marks (as seen)."""

    __slots__ = (
        "_valuation",
        "context",
        "dirty",
        "fence",
        "info",
        "ledger_exposure",
        "lock",
        "mark_times",
        "marks",
        "model",
    )

    def __init__(
        self,
        *,
        info: ExecutionInfo,
        model: ExecutionModel,
        fence: Fence,
        ledger_exposure: Decimal = ZERO,
    ) -> None:
        self.info = info
        self.model = model
        self.fence = fence
        self.lock = asyncio.Lock()
        """Held by whoever steps and commits this execution: one step at a time."""
        self.dirty = False
        """A commit's outcome is unknown: nothing may act on this runner until reloaded."""
        self.marks: dict[str, Decimal] = {}
        self.mark_times: dict[str, float] = {}
        self._valuation: Valuation | None = None
        self.ledger_exposure = ledger_exposure
        """What the risk ledger holds for this execution (as its last write left it); set
        by the book (`ExecutionBook.hold`)."""
        self.context = msg.EventContext(
            execution_id=info.execution_id, strategy_id=info.strategy_id, user_id=info.user_id
        )

    @property
    def execution_id(self) -> uuid.UUID:
        return self.info.execution_id

    @property
    def running(self) -> bool:
        return self.model.running

    def adopt(self, model: ExecutionModel) -> None:
        """Take the model a successful commit wrote (see `Committer.commit`)."""
        self.model = model
        self._valuation = None

    # ------------------------------------------------------------------ marks

    def observe(self, prices: Mapping[str, Decimal], at: float) -> bool:
        """Remember the marks of this execution's own symbols; True when any changed.

        Only its own symbols are kept: the monitor passes one map of every symbol, and
        10,000 runners copying it would not fit in memory."""
        changed = False
        held = self.model.portfolio.positions
        for symbol, price in prices.items():
            if (symbol in self.info.targets or symbol in held) and price > 0:
                if self.marks.get(symbol) != price:
                    changed = True
                    self.marks[symbol] = price
                self.mark_times[symbol] = at
        if changed:
            self._valuation = None
        return changed

    def fresh_marks(self, now: float, max_age: float) -> dict[str, Decimal]:
        """Marks seen within `max_age` seconds: the only ones an order may be sized at."""
        return {
            s: p for s, p in self.marks.items() if now - self.mark_times.get(s, -1e18) <= max_age
        }

    def all_held_fresh(self, now: float, max_age: float) -> bool:
        """Every held symbol has a fresh mark (a valuation the day's start may rest on)."""
        times = self.mark_times
        return all(
            now - times.get(symbol, -1e18) <= max_age for symbol in self.model.portfolio.positions
        )

    def valuation(self) -> Valuation:
        """The committed portfolio at the known marks (last fill price where none is known)."""
        if self._valuation is None:
            self._valuation = self.model.portfolio.valuation(self.marks)
        return self._valuation

    def exposure(self) -> Decimal:
        """What the risk ledger must hold for the committed model at the known marks
        (`ExecutionModel.exposure`: live buys and buys waiting for a rate token included)."""
        return self.model.exposure(self.valuation().market_value)

    def held(self) -> dict[str, Decimal]:
        return {s: p.quantity for s, p in self.model.portfolio.positions.items()}

    def is_flat(self) -> bool:
        """No position and no order in flight (locally)."""
        return not self.model.portfolio.positions and not self.model.live_orders()
