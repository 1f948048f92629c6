"""`ProtectionBook`: one execution's protective orders as a pure, serializable state machine.

Facts go in (`on_position`, `on_price`, `on_order`); `decide` returns what to do (a
`ProtectionStep`: intents to record then send, cancels to send, events). No I/O, no clock:
every instant is an argument. The runtime records the step's intents and `to_json()` in the
same commit, then sends; after a restart `from_json` plus the reconciled order statuses and
positions re-arm it. `decide` is due after `on_position` / `on_order` changed something,
whenever `on_price` returns True (a trigger latched), and on the periodic monitor cycle (the
time-based steps: a native leg's grace, a failed exit's back-off).

The guarantees (property-tested, see tests/unit/domain/protection):
- one exit per trigger: a latched trigger releases at most one exit order at a time; a
  follow-up (the remainder after a rejected, cancelled or capped exit, or shares added
  after it) leaves only once the previous exit and every native leg are terminal and the
  position has been told again, so no two protective exits are ever live for one position
  and their quantities never exceed what is held;
- native or emulated, never both: while native legs may still act at the OMS the worker
  only watches; if they do not execute within `native_grace_s` of the worker's marks
  crossing, it cancels them and exits itself once the OMS confirms they are terminal;
- never unprotected while open: from the first `on_position` every configured leg is
  watched on every mark (the emulator is the fallback of every native placement); the only
  gap is the back-off after a failed exit, which `unprotected()` reports.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import ZERO, quantize_price
from strategy_worker.domain.orders import (
    ExecutionReport,
    OmsCapabilities,
    OmsOrder,
    OrderIntent,
    OrderStatus,
)
from strategy_worker.domain.protection import events as ev
from strategy_worker.domain.protection import rules, steps
from strategy_worker.domain.protection.rules import Leg
from strategy_worker.domain.protection.spec import ProtectionSpec
from strategy_worker.domain.protection.state import (
    Guard,
    Trigger,
    advance_status,
    guards_from_json,
    guards_to_json,
)
from strategy_worker.domain.protection.steps import EXIT_SIDE, find, orders_of


@dataclass(frozen=True, slots=True)
class ProtectionStep:
    """What one `decide` wants done.

    `intents`: new protective orders, numbered from the `next_seq` given; record them (with
    the book's `to_json()`) in one commit, then submit them. Native legs of one OCO group
    are consecutive and share `oco_group_id`. `cancels`: client order ids to cancel at the
    OMS after the commit. `events`: what happened (risk events to persist).
    """

    intents: tuple[OrderIntent, ...] = ()
    cancels: tuple[str, ...] = ()
    events: tuple[ev.ProtectionEvent, ...] = field(default=())

    @property
    def must_persist(self) -> bool:
        """True when the book's state must be committed before anything is sent."""
        return bool(self.intents or self.cancels or self.events)


class ProtectionBook:
    """The protective legs of every position of one execution (long positions, SELL exits)."""

    def __init__(
        self,
        execution_id: uuid.UUID,
        spec: ProtectionSpec,
        *,
        capabilities: OmsCapabilities | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.spec = spec
        self.capabilities = capabilities or OmsCapabilities.baseline()
        self._ctx = steps.Ctx.of(spec, self.capabilities)
        self._guards: dict[str, Guard] = {}
        self._owned: dict[str, str] = {}  # client order id -> symbol
        self._pending: list[ev.ProtectionEvent] = []
        self._dirty = False

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        """JSON-safe state (Decimals as strings); commit it with the step's intents."""
        self._dirty = False
        return guards_to_json(self._guards)

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        *,
        execution_id: uuid.UUID,
        spec: ProtectionSpec,
        capabilities: OmsCapabilities | None = None,
    ) -> ProtectionBook:
        """The book as committed; then feed it the reconciled orders, positions and marks."""
        book = cls(execution_id, spec, capabilities=capabilities)
        book._guards = guards_from_json(dict(data))
        for symbol, guard in book._guards.items():
            for order in orders_of(guard):
                book._owned[order.client_order_id] = symbol
        return book

    def clone(self, *, capabilities: OmsCapabilities | None = None) -> ProtectionBook:
        """An independent copy (for a step that may not be committed), equal in every state
        `to_json` writes, its dirty flag and the events its triggers still owe `decide`;
        `capabilities` replaces the OMS's answer (as `set_capabilities`)."""
        twin = ProtectionBook.__new__(ProtectionBook)
        twin.execution_id = self.execution_id
        twin.spec = self.spec
        caps = self.capabilities if capabilities is None else capabilities
        twin.capabilities = caps
        twin._ctx = self._ctx if caps == self.capabilities else steps.Ctx.of(self.spec, caps)
        twin._guards = {symbol: guard.copy() for symbol, guard in self._guards.items()}
        twin._owned = dict(self._owned)
        twin._pending = list(self._pending)
        twin._dirty = self._dirty
        return twin

    @property
    def dirty(self) -> bool:
        """State changed since the last `to_json()` (e.g. a trailing watermark ratcheted).
        A crash loses what was not committed: a watermark may step back to the committed one."""
        return self._dirty

    # ------------------------------------------------------------------ facts

    def set_capabilities(self, capabilities: OmsCapabilities) -> None:
        """The OMS's answer to GetCapabilities (at start and after a reconnect)."""
        self.capabilities = capabilities
        self._ctx = steps.Ctx.of(self.spec, capabilities)

    def on_position(
        self,
        symbol: str,
        quantity: Decimal,
        cost_basis: Decimal,
        *,
        selling: Decimal = ZERO,
        buying: Decimal = ZERO,
    ) -> None:
        """The position after every fill applied so far (quantity 0: flat).

        `selling`/`buying`: quantities of the execution's OTHER live orders of the symbol
        (not the book's own, see `owns`); exits never sell what another sell already does,
        and native legs are armed only once no buy is in flight.
        """
        guard = self._guards.get(symbol)
        if guard is None and not self.spec.enabled:
            return
        if quantity <= 0:
            if guard is not None:
                guard.quantity, guard.cost_basis = ZERO, ZERO
                guard.selling, guard.buying = selling, buying
                guard.position_fresh = True
                self._dirty = True
            return
        if guard is None:
            guard = self._guards[symbol] = Guard(symbol=symbol)
        if guard.quantity <= 0:
            self._open(guard, quantity, cost_basis)
        guard.quantity, guard.cost_basis = quantity, cost_basis
        guard.selling, guard.buying = selling, buying
        guard.position_fresh = True
        self._dirty = True

    def on_price(self, symbol: str, mark: Decimal, at: datetime) -> bool:
        """A fresh mark: ratchet the trailing watermark, latch a trigger it reaches.

        True when a trigger latched: `decide` is due now. A quiet mark (False) needs no
        `decide` of its own; the periodic one (the monitor cycle) covers the time-based steps
        (a native leg's grace, a failed exit's back-off).
        """
        guard = self._guards.get(symbol)
        if guard is None or guard.quantity <= 0 or mark <= 0:
            return False
        guard.mark = mark
        self._dirty = True
        if guard.trigger is not None or not self.spec.legs:
            return False
        if self.spec.trailing_stop_pct is not None:
            guard.watermark = rules.ratchet(guard.watermark, mark, EXIT_SIDE)
        hit = steps.hit(self._ctx, guard, mark)
        if hit is None:
            return False
        leg, level = hit
        gap = rules.gapped(EXIT_SIDE, level, mark) if leg.is_stop else mark > level
        self._latch(guard, Trigger(leg=leg, level=level, mark=mark, at=at, gap=gap, by_oms=False))
        return True

    def on_order(
        self,
        client_order_id: str,
        status: OrderStatus,
        filled_quantity: Decimal,
        *,
        at: datetime,
        triggered: bool = False,
        reason: str = "",
    ) -> bool:
        """What the OMS says about an order; False (ignored) when the book does not own it.

        A native leg that triggered or filled at the OMS latches its trigger here (the OMS
        saw a price the worker's marks did not). Call `on_position` after the fill is applied
        and before `decide`: nothing is released on a position that may predate the fill.
        """
        symbol = self._owned.get(client_order_id)
        if symbol is None:
            return False
        guard = self._guards[symbol]
        order = find(guard, client_order_id)
        if order is None:
            return True
        new_status = advance_status(order.status, status)
        new_filled = max(order.filled, filled_quantity)
        if new_filled != order.filled:
            guard.position_fresh = False  # the position must show this fill before an exit
        order.status, order.filled = new_status, new_filled
        order.triggered = order.triggered or triggered
        if reason:
            order.reason = reason
        self._dirty = True
        native = guard.native
        in_group = native is not None and any(
            leg.client_order_id == client_order_id for leg in native.legs
        )
        if in_group and guard.trigger is None and (order.triggered or order.filled > 0):
            level = order.level if order.level is not None else (guard.mark or ZERO)
            mark = guard.mark if guard.mark is not None else level
            self._latch(
                guard,
                Trigger(leg=order.leg, level=level, mark=mark, at=at, gap=False, by_oms=True),
            )
        return True

    def on_report(self, report: ExecutionReport, *, at: datetime) -> bool:
        """`on_order` from an execution report."""
        return self.on_order(
            report.client_order_id,
            report.status,
            report.filled_quantity,
            at=at,
            triggered=report.triggered,
            reason=report.reason,
        )

    def on_oms_order(self, order: OmsOrder, *, at: datetime) -> bool:
        """`on_order` from the OMS's view of an order (reconciliation after a restart)."""
        return self.on_order(
            order.client_order_id,
            order.status,
            order.filled_quantity,
            at=at,
            triggered=order.triggered,
            reason=order.reason,
        )

    # ------------------------------------------------------------------ decisions

    def decide(self, *, at: datetime, next_seq: int) -> ProtectionStep:
        """Everything due now, position by position (sorted by symbol)."""
        out = steps.Out(self.execution_id, next_seq)
        ctx = self._ctx
        for symbol in sorted(self._guards):
            guard = self._guards[symbol]
            before = {order.client_order_id for order in orders_of(guard)}
            steps.step(ctx, guard, at, out)
            after = {order.client_order_id for order in orders_of(guard)}
            for cid in before - after:
                self._owned.pop(cid, None)
            for cid in after - before:
                self._owned[cid] = symbol
            if guard.quantity <= 0 and not guard.alive:
                for cid in after:
                    self._owned.pop(cid, None)
                del self._guards[symbol]
        events = (*self._pending, *out.events)
        self._pending.clear()
        if out.intents or out.cancels or events:
            self._dirty = True
        return ProtectionStep(tuple(out.intents), tuple(out.cancels), events)

    # ------------------------------------------------------------------ queries

    def owns(self, client_order_id: str) -> bool:
        """Whether an order is one of the book's (a native leg or an exit)."""
        return client_order_id in self._owned

    def is_resting_leg(self, client_order_id: str) -> bool:
        """A native leg resting at the OMS: not a sell in flight (it sells only on trigger,
        and one group sells its quantity once, however many legs it has)."""
        symbol = self._owned.get(client_order_id)
        if symbol is None:
            return False
        native = self._guards[symbol].native
        return native is not None and any(
            leg.client_order_id == client_order_id for leg in native.legs
        )

    def exits_in_flight(self) -> dict[str, Decimal]:
        """Per symbol, what live exits will still sell (count these as sells in flight)."""
        out: dict[str, Decimal] = {}
        for symbol, guard in self._guards.items():
            if guard.exit is not None and guard.exit.live:
                out[symbol] = max(guard.exit.quantity - guard.exit.filled, ZERO)
        return out

    def unprotected(self, positions: Mapping[str, Decimal] | None = None) -> list[str]:
        """Open positions without live protection (expected empty; the metric's source).

        A guard is protected while it watches untriggered legs, or while an exit or native
        leg is live; it is not when a trigger waits for its next exit (a failed exit's
        back-off). `positions` (symbol -> quantity held) adds those the book never heard of.
        """
        if not self.spec.enabled:
            return []
        found = []
        for symbol in sorted(self._guards):
            guard = self._guards[symbol]
            if guard.quantity <= 0 or guard.trigger is None or guard.alive:
                continue
            if guard.exposed > 0:
                found.append(symbol)
        for symbol, quantity in sorted((positions or {}).items()):
            if quantity > 0 and symbol not in self._guards:
                found.append(symbol)
        return sorted(set(found))

    def levels(self, symbol: str) -> dict[Leg, Decimal]:
        """Current level of each configured leg of a held symbol (empty when flat)."""
        guard = self._guards.get(symbol)
        if guard is None or guard.quantity <= 0:
            return {}
        return steps.levels_of(self._ctx, guard)

    def guard(self, symbol: str) -> Guard | None:
        """The state of one symbol (read-only view for tests and operators)."""
        return self._guards.get(symbol)

    @property
    def symbols(self) -> list[str]:
        return sorted(self._guards)

    # ------------------------------------------------------------------ internals

    def _open(self, guard: Guard, quantity: Decimal, cost_basis: Decimal) -> None:
        """A position opened from flat: a new generation, trailing from the average cost."""
        guard.generation += 1
        guard.exits_released = 0
        guard.failures = 0
        guard.retry_at = None
        guard.fallback_noted = False
        guard.watermark = quantize_price(rules.entry_price(quantity, cost_basis))
        # A trigger belongs to the position it fired on; an exit of that one still live
        # (its cancel not yet confirmed) is waited for before anything else is placed.
        guard.trigger = None

    def _latch(self, guard: Guard, trigger: Trigger) -> None:
        guard.trigger = trigger
        self._pending.append(
            ev.triggered(
                guard.symbol,
                trigger.leg,
                level=trigger.level,
                mark=trigger.mark,
                gap=trigger.gap,
                by_oms=trigger.by_oms,
                at=trigger.at,
            )
        )
