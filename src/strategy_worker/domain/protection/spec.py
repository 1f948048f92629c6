"""`ProtectionSpec`: the protection one execution runs with, derived from its risk limits.

The legs come from the (already tightened) `RiskLimits`: a stop-loss `stop_loss_pct` below
the average cost, a trailing stop `trailing_stop_pct` below the high-water mark, a take-
profit `take_profit_pct` above the average cost. `native_order_types` says which native
order type each leg needs, so the placement can be checked against an OMS's capabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from strategy_worker.domain.orders import OmsCapabilities, OrderType
from strategy_worker.domain.protection.rules import LEG_PRIORITY, Leg
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import ProtectionPlacement


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionSpec:
    """One execution's protective legs and where they rest (immutable; not persisted:
    rebuilt from the execution's limits after a restart)."""

    stop_loss_pct: Decimal | None = None
    trailing_stop_pct: Decimal | None = None
    take_profit_pct: Decimal | None = None
    #: None: triggered stops exit at MARKET; else LIMIT this fraction below the level.
    limit_offset_pct: Decimal | None = None
    placement: ProtectionPlacement = ProtectionPlacement.AUTO
    #: Seconds a native leg may lag the worker's marks before the worker takes over.
    native_grace_s: float = 5.0
    #: After a failed exit, the next waits retry_base_s x 2^(failures-1), at most retry_max_s.
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    #: The configured legs in priority order (derived once; empty: nothing to protect).
    legs: tuple[Leg, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pct = {
            Leg.STOP_LOSS: self.stop_loss_pct,
            Leg.TRAILING_STOP: self.trailing_stop_pct,
            Leg.TAKE_PROFIT: self.take_profit_pct,
        }
        legs = tuple(leg for leg in LEG_PRIORITY if pct[leg] is not None)
        object.__setattr__(self, "legs", legs)

    @classmethod
    def from_limits(cls, limits: RiskLimits, *, include_stop_loss: bool = True) -> ProtectionSpec:
        """The spec of an execution whose limits are `worker_limits.tightened_by(params)`.

        `include_stop_loss=False` leaves the fixed stop-loss to `StopLossMonitor` (today's
        behaviour) and protects with the trailing stop and the take-profit only.
        """
        return cls(
            stop_loss_pct=limits.stop_loss_pct if include_stop_loss else None,
            trailing_stop_pct=limits.trailing_stop_pct,
            take_profit_pct=limits.take_profit_pct,
            limit_offset_pct=limits.protection_limit_offset_pct,
            placement=limits.protection,
            native_grace_s=limits.protection_native_grace,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.legs)

    def native_order_type(self, leg: Leg) -> OrderType:
        """The native order each leg rests as: STOP or STOP_LIMIT, TRAILING_STOP, LIMIT."""
        if leg is Leg.TAKE_PROFIT:
            return OrderType.LIMIT
        if leg is Leg.TRAILING_STOP:
            return OrderType.TRAILING_STOP
        return OrderType.STOP if self.limit_offset_pct is None else OrderType.STOP_LIMIT

    def native_refusal(self, capabilities: OmsCapabilities) -> str | None:
        """Why these legs cannot rest at an OMS with these capabilities (None: they can).

        Native legs must all rest together: every leg's order type, reduce-only (an exit never
        sells beyond the position) and, with more than one leg, OCO groups (one exit only).
        """
        if self.placement is ProtectionPlacement.EMULATED:
            return "placement is emulated"
        missing = [
            self.native_order_type(leg).value
            for leg in self.legs
            if not capabilities.supports(self.native_order_type(leg))
        ]
        if missing:
            return f"OMS lacks order types {', '.join(missing)}"
        if not capabilities.reduce_only:
            return "OMS lacks reduce-only orders"
        if len(self.legs) > 1 and not capabilities.oco_groups:
            return "OMS lacks OCO groups"
        return None
