"""Stop-loss monitoring with a buffer zone against whipsaws.

For a position with exact average cost A (cost_basis / quantity) and stop fraction p:
- stop level S = A x (1 - p), rounded half-even by `quantize_level` (PRICE_QUANTUM, or 4
  significant digits below 0.1, so a sub-cent level is never 0);
- buffer top B = S x (1 + buffer), same rounding (buffer 2% by default);
- mark <= S: CRITICAL `STOP_LOSS_TRIGGERED`, a MARKET STOP_LOSS sell of the whole position
  not already being sold; the symbol is then blocked from re-entry at level B;
- S < mark <= B: one WARNING `STOP_LOSS_WARNING` per entry into the zone;
- a blocked symbol is released (INFO `STOP_LOSS_REARMED`) once its mark is > B, so a stop-out
  followed by a bounce into the zone cannot be re-bought and stopped out again (whipsaw).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from strategy_worker.domain.events import (
    RiskEvent,
    RiskEventType,
    Severity,
    StopLossRearmed,
    StopLossTriggered,
    StopLossWarning,
    details,
)
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.money import ZERO, quantize_level
from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderType, Side
from strategy_worker.domain.positions import Position

ONE = Decimal(1)
_EMPTY: Mapping[str, Decimal] = {}


def stop_level(position: Position, stop_loss_pct: Decimal) -> Decimal:
    """S = exact average cost x (1 - stop_loss_pct), `quantize_level` half-even."""
    return quantize_level(position.cost_basis / position.quantity * (ONE - stop_loss_pct))


@dataclass(frozen=True, slots=True)
class StopLossScan:
    """Orders to send (in `intent_seq` order) and the events of one scan."""

    intents: tuple[OrderIntent, ...] = ()
    events: tuple[StopLossTriggered | StopLossWarning | StopLossRearmed, ...] = field(default=())


class StopLossMonitor:
    """Per-execution stop-loss state: which symbols are in the warning zone or stopped out."""

    __slots__ = ("_warned", "buffer", "stop_loss_pct", "stopped_out")

    def __init__(self, stop_loss_pct: Decimal | None, buffer: Decimal) -> None:
        self.stop_loss_pct = stop_loss_pct
        self.buffer = buffer
        #: symbol -> re-entry level B: buys are blocked until the mark is above it.
        self.stopped_out: dict[str, Decimal] = {}
        self._warned: set[str] = set()

    def clone(self) -> StopLossMonitor:
        """An independent copy of the zone and stop-out state."""
        twin = StopLossMonitor(self.stop_loss_pct, self.buffer)
        twin.stopped_out = dict(self.stopped_out)
        twin._warned = set(self._warned)
        return twin

    def is_blocked(self, symbol: str) -> bool:
        return symbol in self.stopped_out

    def scan(
        self,
        positions: Mapping[str, Position],
        prices: Mapping[str, Decimal],
        *,
        execution_id: uuid.UUID,
        first_seq: int,
        pending_sells: Mapping[str, Decimal] = _EMPTY,
    ) -> StopLossScan:
        """Check every position (sorted by symbol) and every blocked symbol at `prices`.

        `pending_sells` is the quantity already being sold per symbol, so that a stop order
        in flight is never sent twice. Symbols without a price are skipped this round.
        """
        intents: list[OrderIntent] = []
        events: list[StopLossTriggered | StopLossWarning | StopLossRearmed] = []
        self._rearm(prices, positions, events)
        pct = self.stop_loss_pct
        if pct is None:
            return StopLossScan((), tuple(events))
        for symbol in sorted(positions):
            pos = positions[symbol]
            mark = prices.get(symbol)
            if pos.quantity <= 0 or mark is None or mark <= 0:
                continue
            level = stop_level(pos, pct)
            top = quantize_level(level * (ONE + self.buffer))
            if mark <= level:
                self._warned.discard(symbol)
                self.stopped_out[symbol] = top
                quantity = pos.quantity - pending_sells.get(symbol, ZERO)
                if quantity <= 0:
                    continue
                seq = first_seq + len(intents)
                intents.append(
                    OrderIntent(
                        client_order_id=client_order_id(execution_id, seq),
                        execution_id=execution_id,
                        intent_seq=seq,
                        symbol=symbol,
                        side=Side.SELL,
                        order_type=OrderType.MARKET,
                        quantity=quantity,
                        price=mark,
                        purpose=OrderPurpose.STOP_LOSS,
                    )
                )
                events.append(_triggered(symbol, mark, level, pos, quantity))
            elif mark <= top:
                if symbol not in self._warned:
                    self._warned.add(symbol)
                    events.append(_warning(symbol, mark, level, top))
            else:
                self._warned.discard(symbol)
        return StopLossScan(tuple(intents), tuple(events))

    def _rearm(
        self,
        prices: Mapping[str, Decimal],
        positions: Mapping[str, Position],
        events: list[StopLossTriggered | StopLossWarning | StopLossRearmed],
    ) -> None:
        for symbol in sorted(self.stopped_out):
            mark = prices.get(symbol)
            reentry = self.stopped_out[symbol]
            held = positions.get(symbol)
            # Stay blocked while the stopped position is still being closed.
            if mark is None or mark <= reentry or (held is not None and held.quantity > 0):
                continue
            del self.stopped_out[symbol]
            events.append(
                StopLossRearmed(
                    symbol=symbol,
                    mark=mark,
                    reentry_level=reentry,
                    risk_event=RiskEvent(
                        event_type=RiskEventType.STOP_LOSS_REARMED,
                        severity=Severity.INFO,
                        description=f"{symbol} recovered to {mark}, above re-entry {reentry}",
                        action_taken="rebalancing may buy the symbol again",
                        symbol=symbol,
                        details=details(mark=mark, reentry_level=reentry),
                    ),
                )
            )


def _triggered(
    symbol: str, mark: Decimal, level: Decimal, pos: Position, quantity: Decimal
) -> StopLossTriggered:
    return StopLossTriggered(
        symbol=symbol,
        mark=mark,
        stop_level=level,
        quantity=quantity,
        risk_event=RiskEvent(
            event_type=RiskEventType.STOP_LOSS_TRIGGERED,
            severity=Severity.CRITICAL,
            description=f"{symbol} mark {mark} <= stop level {level} (avg cost {pos.avg_cost})",
            action_taken=f"STOP_LOSS market sell of {quantity}; re-entry blocked",
            symbol=symbol,
            details=details(mark=mark, stop_level=level, avg_cost=pos.avg_cost, quantity=quantity),
        ),
    )


def _warning(symbol: str, mark: Decimal, level: Decimal, top: Decimal) -> StopLossWarning:
    return StopLossWarning(
        symbol=symbol,
        mark=mark,
        stop_level=level,
        risk_event=RiskEvent(
            event_type=RiskEventType.STOP_LOSS_WARNING,
            severity=Severity.WARNING,
            description=f"{symbol} mark {mark} within buffer of stop level {level} (<= {top})",
            action_taken="none; watching",
            symbol=symbol,
            details=details(mark=mark, stop_level=level, buffer_top=top),
        ),
    )
