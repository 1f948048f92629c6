"""Per-execution risk state: trading state, the trading day and its loss floor, rate bucket,
stop-loss monitor, and an outbox of the state changes to persist and publish.

Trading states and their triggers (README.md, "Trading rules", "Trading states"):
- ACTIVE: every check applies; the normal state.
- REDUCING: only orders that shrink a position (sells) pass. Entered by `enter_reducing`
  (reconciliation mismatch, OMS anomaly, operator); left only by `leave_reducing`.
- HALTED: the day's loss reached its limit; only CLOSE and STOP_LOSS sells pass. Lifted at
  the start of the next trading day (back to REDUCING if that flag is still set, else ACTIVE).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from strategy_worker.domain.events import (
    DailyLossLimitReached,
    DomainEvent,
    RiskEvent,
    RiskEventType,
    Severity,
    TradingStateChanged,
    details,
)
from strategy_worker.domain.money import money_str, to_decimal
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.risk.rate_limit import TokenBucket
from strategy_worker.domain.risk.stop_loss import StopLossMonitor
from strategy_worker.errors import DomainError


class TradingState(StrEnum):
    """What an execution may still trade: everything, only risk-reducing orders, nothing
    (`strategy_executions.trading_state`)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class ExecutionRisk:
    """Mutable risk state of one execution; created by `RiskManager.new_execution`."""

    __slots__ = (
        "_day_offset",
        "_outbox",
        "bucket",
        "caps_equity",
        "day_start_equity",
        "execution_id",
        "halted",
        "limits",
        "loss_floor",
        "loss_limit",
        "max_position",
        "next_day_ts",
        "operator_reducing",
        "position_cap",
        "reducing",
        "reducing_reason",
        "stops",
        "trading_day",
        "warn_position",
        "warning_cap",
    )

    def __init__(
        self,
        execution_id: uuid.UUID,
        limits: RiskLimits,
        *,
        start_equity: Decimal,
        now: datetime,
    ) -> None:
        self.execution_id = execution_id
        #: Already tightened by the strategy's risk params.
        self.limits = limits
        self.max_position = limits.max_position_size
        self.warn_position = limits.max_position_size * limits.position_warning_ratio
        #: Caches of max_position x equity and warn_position x equity for `caps_equity`.
        self.caps_equity: Decimal | None = None
        self.position_cap = Decimal(0)
        self.warning_cap = Decimal(0)
        self.halted = False
        self.reducing = False
        self.reducing_reason = ""
        #: An operator's kill switch (reduce-only): apart from `reducing`, which
        #: reconciliation may clear; only `leave_operator_reducing` lifts this one.
        self.operator_reducing = False
        self.bucket = TokenBucket(
            limits.execution_orders_per_second, limits.execution_order_burst, now.timestamp()
        )
        self.stops = StopLossMonitor(limits.stop_loss_pct, limits.stop_loss_buffer)
        self._outbox: list[DomainEvent] = []
        start = limits.trading_day_start
        self._day_offset = timedelta(hours=start.hour, minutes=start.minute, seconds=start.second)
        self.trading_day = date.min
        self.next_day_ts = 0.0
        self.day_start_equity = start_equity
        self.loss_limit = start_equity
        self.loss_floor = start_equity
        self.start_day(now, start_equity)

    def clone(self) -> ExecutionRisk:
        """An independent copy for a step that may not be committed. The rate bucket is
        shared on purpose: a token taken by a step that is then not committed stays taken
        (the conservative side), and the bucket is about attempts, not outcomes."""
        twin = ExecutionRisk.__new__(ExecutionRisk)
        for name in ExecutionRisk.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.stops = self.stops.clone()
        twin._outbox = list(self._outbox)
        return twin

    @property
    def state(self) -> TradingState:
        if self.halted:
            return TradingState.HALTED
        if self.reducing or self.operator_reducing:
            return TradingState.REDUCING
        return TradingState.ACTIVE

    def take_events(self) -> list[DomainEvent]:
        """Drain the state-change events (to persist as risk events and publish)."""
        events, self._outbox = self._outbox, []
        return events

    def trading_day_of(self, when: datetime) -> date:
        """The trading day `when` belongs to (UTC date, shifted by `trading_day_start`)."""
        return (when.astimezone(UTC) - self._day_offset).date()

    def start_day(self, now: datetime, equity: Decimal) -> None:
        """Open the trading day containing `now` with `equity` as its start (lifts HALTED)."""
        day = self.trading_day_of(now)
        self.trading_day = day
        next_start = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        self.next_day_ts = (next_start + self._day_offset).timestamp()
        self.day_start_equity = equity
        by_ratio = self.limits.max_daily_loss * equity
        amount = self.limits.max_daily_loss_amount
        self.loss_limit = by_ratio if by_ratio < amount else amount
        self.loss_floor = equity - self.loss_limit
        if self.halted:
            before = self.state
            self.halted = False
            self._changed(before, f"new trading day {day}: daily loss limit reset")

    def open_pending(self, now: datetime) -> None:
        """The trading day containing `now` began while no valuation at fresh marks was
        known (the worker was down at the roll): HALTED lifts as on any new day, but there
        is no loss floor until `start_day` gives the equity at fresh marks. Never open a
        day at fill prices: that start equity is wrong by the day's moves."""
        self.start_day(now, self.day_start_equity)
        self.loss_floor = _NO_FLOOR

    @property
    def day_start_known(self) -> bool:
        """False between `open_pending` and the `start_day` at fresh marks."""
        return self.loss_floor is not _NO_FLOOR

    def observe(self, now: datetime, equity: Decimal) -> None:
        """Roll the trading day when due, then halt if the day's loss reached its limit."""
        if now.timestamp() >= self.next_day_ts:
            self.start_day(now, equity)
        if equity <= self.loss_floor and not self.halted:
            self.halt(equity)

    def halt(self, equity: Decimal) -> None:
        """Daily loss reached: HALTED until the next trading day."""
        before = self.state
        self.halted = True
        loss = self.day_start_equity - equity
        self._outbox.append(
            DailyLossLimitReached(
                execution_id=self.execution_id,
                day_start_equity=self.day_start_equity,
                equity=equity,
                loss_limit=self.loss_limit,
                risk_event=RiskEvent(
                    event_type=RiskEventType.DAILY_LOSS_LIMIT_REACHED,
                    severity=Severity.CRITICAL,
                    description=(
                        f"daily loss {loss} reached the limit {self.loss_limit} "
                        f"(day start equity {self.day_start_equity})"
                    ),
                    action_taken="trading HALTED until the next trading day; only closes pass",
                    details=details(
                        day_start_equity=self.day_start_equity,
                        equity=equity,
                        loss=loss,
                        loss_limit=self.loss_limit,
                        trading_day=self.trading_day,
                    ),
                ),
            )
        )
        self._changed(before, "daily loss limit reached")

    def to_json(self) -> dict[str, Any]:
        """What must survive a restart: a HALTED execution stays halted, a stop-out blocked."""
        return {
            "halted": self.halted,
            "reducing": self.reducing,
            "reducing_reason": self.reducing_reason,
            "operator_reducing": self.operator_reducing,
            "trading_day": self.trading_day.isoformat(),
            "day_start_equity": money_str(self.day_start_equity),
            "stopped_out": {sym: money_str(lvl) for sym, lvl in self.stops.stopped_out.items()},
        }

    def restore(self, data: Mapping[str, Any], now: datetime) -> bool:
        """Load `to_json()` state saved earlier; True when the saved day is today's. When
        it is over, the caller opens the new day (`open_pending`, then `start_day` at fresh
        marks): a halt from a past day does not survive it."""
        try:
            day = date.fromisoformat(data["trading_day"])
            self.reducing = bool(data["reducing"])
            self.reducing_reason = str(data["reducing_reason"])
            self.operator_reducing = bool(data.get("operator_reducing", False))
            self.stops.stopped_out = {
                str(sym): to_decimal(lvl) for sym, lvl in data["stopped_out"].items()
            }
            today = day == self.trading_day_of(now)
            if today:
                self.start_day(now, to_decimal(data["day_start_equity"]))
                self.halted = bool(data["halted"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DomainError(f"execution risk state is not valid: {exc}") from exc
        self._outbox.clear()
        return today

    def enter_reducing(self, reason: str) -> None:
        """Only position-shrinking orders pass until `leave_reducing` (idempotent)."""
        if self.reducing:
            return
        before = self.state
        self.reducing = True
        self.reducing_reason = reason
        self._changed(before, reason)

    def leave_reducing(self, reason: str) -> None:
        """Clear REDUCING (operator or a clean reconciliation); idempotent."""
        if not self.reducing:
            return
        before = self.state
        self.reducing = False
        self.reducing_reason = ""
        self._changed(before, reason)

    def enter_operator_reducing(self, reason: str) -> None:
        """An operator's reduce-only (kill switch): only sells pass until lifted."""
        before = self.state
        self.operator_reducing = True
        self._changed(before, reason)

    def leave_operator_reducing(self, reason: str) -> None:
        """Lift the operator's reduce-only; REDUCING stays if another reason holds it."""
        before = self.state
        self.operator_reducing = False
        self._changed(before, reason)

    def _changed(self, before: TradingState, reason: str) -> None:
        after = self.state
        if after is before:
            return
        severity = Severity.INFO if after is TradingState.ACTIVE else Severity.CRITICAL
        self._outbox.append(
            TradingStateChanged(
                execution_id=self.execution_id,
                previous=before.value,
                current=after.value,
                reason=reason,
                risk_event=RiskEvent(
                    event_type=RiskEventType.TRADING_STATE_CHANGED,
                    severity=severity,
                    description=f"trading state {before} -> {after}: {reason}",
                    action_taken=_ACTIONS[after],
                    details=details(previous=before, current=after),
                ),
            )
        )


_NO_FLOOR = Decimal("-Infinity")

_ACTIONS = {
    TradingState.ACTIVE: "all orders allowed again",
    TradingState.REDUCING: "only position-reducing orders pass",
    TradingState.HALTED: "only CLOSE and STOP_LOSS orders pass",
}
