"""`RiskLimits`: the worker's risk configuration, frozen and validated once at startup.

Defaults are the spec's. A strategy's `risk_params` can only tighten them
(`tightened_by`): every ratio becomes the minimum of the two, never the maximum. For the
protective exits that means a closer trailing stop and an earlier take-profit; where they
rest (`protection`) follows the strategy unless the worker insists on `emulated`.

The cash reserve (slippage and fees, `reserved_buy_cost`) is one rule for sizing, the
rebalancer and the pre-trade cash check: an order is budgeted at the most it can cost
when it fills within the reserve, so such fills never take cash below zero.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from strategy_worker.domain.money import floor_quantity
from strategy_worker.domain.strategy import ProtectionPlacement, StrategyRiskParams

_BPS = Decimal(10_000)


class RiskLimits(BaseModel):
    """Pre-trade and monitoring limits; money in Decimal, ratios as fractions of equity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: An order below this value is denied (dust); sizing and rebalancing skip it.
    min_order_value: Decimal = Field(default=Decimal("100"), gt=0)
    #: No single order above this value; sizing splits, the risk manager resizes down.
    max_order_value: Decimal = Field(default=Decimal("100000"), gt=0)
    #: A position may be at most this fraction of the execution's equity.
    max_position_size: Decimal = Field(default=Decimal("0.30"), gt=0, le=1)
    #: WARNING event once a position reaches this fraction of its limit (0.8 x 30% = 24%).
    position_warning_ratio: Decimal = Field(default=Decimal("0.80"), gt=0, le=1)
    #: Worker-wide gross long exposure, orders in flight included.
    max_total_exposure: Decimal = Field(default=Decimal("1000000"), gt=0)
    #: The same, per user (every execution of one user_id, fleet-wide); None = no cap.
    max_user_exposure: Decimal | None = Field(default=None, gt=0)
    #: A strategy whose first orders the remaining capacity funds to less than this
    #: fraction is refused (`insufficient_capacity`); at or above it, it starts scaled down.
    min_funded_fraction: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    #: Daily loss limit as a fraction of start-of-day equity ...
    max_daily_loss: Decimal = Field(default=Decimal("0.05"), gt=0, le=1)
    #: ... and as an absolute amount; the smaller of the two applies.
    max_daily_loss_amount: Decimal = Field(default=Decimal("50000"), gt=0)
    #: Worker default stop-loss (fraction below average cost); None = only a strategy's own.
    stop_loss_pct: Decimal | None = Field(default=None, gt=0, le=Decimal("0.5"))
    #: Width of the zone above a stop level: warning zone and re-entry barrier.
    stop_loss_buffer: Decimal = Field(default=Decimal("0.02"), ge=0, le=Decimal("0.5"))
    #: Order submit rate per execution (token bucket: sustained rate and burst).
    execution_orders_per_second: float = Field(default=2.0, gt=0)
    execution_order_burst: int = Field(default=100, ge=1)
    #: Order submit rate for the whole worker.
    worker_orders_per_second: float = Field(default=50.0, gt=0)
    worker_order_burst: int = Field(default=200, ge=1)
    #: UTC time of day at which a trading day starts (daily loss resets, HALTED lifts).
    trading_day_start: time = time(0, 0)
    #: Cash kept back for fills worse than the reference price: a buy is budgeted as if it
    #: filled this many basis points above it, a sell this many below.
    slippage_reserve_bps: Decimal = Field(default=Decimal(10), ge=0, le=Decimal(1000))
    #: ... and for fees: this many basis points of the filled notional ...
    fee_reserve_bps: Decimal = Field(default=Decimal(10), ge=0, le=Decimal(1000))
    #: ... plus this amount per order. Fills within these reserves never take cash below 0.
    fee_reserve_per_order: Decimal = Field(default=Decimal("1.00"), ge=0)
    #: Worker default trailing stop (fraction below the high-water mark); None = only a
    #: strategy's own.
    trailing_stop_pct: Decimal | None = Field(default=None, gt=0, le=Decimal("0.5"))
    #: Worker default take-profit (fraction above the average cost); None = only a strategy's.
    take_profit_pct: Decimal | None = Field(default=None, gt=0, le=Decimal(10))
    #: Where protective orders rest: native at the OMS, emulated in the worker, or auto.
    protection: ProtectionPlacement = ProtectionPlacement.AUTO
    #: None: a triggered stop exits with a MARKET order; else a LIMIT this fraction below
    #: the stop level (STOP_LIMIT; a trailing stop's limit offset).
    protection_limit_offset_pct: Decimal | None = Field(default=None, gt=0, le=Decimal("0.5"))
    #: Seconds a native stop may stay unfilled after the worker's marks crossed its level
    #: before the worker cancels it and exits itself.
    protection_native_grace: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> RiskLimits:
        if self.min_order_value > self.max_order_value:
            raise ValueError("min_order_value must not exceed max_order_value")
        if self.trading_day_start.tzinfo is not None:
            raise ValueError("trading_day_start is a naive UTC time of day")
        return self

    @property
    def buy_cost_factor(self) -> Decimal:
        """The most cash a buy takes per unit of reference notional, fees in bps included:
        (1 + slippage) x (1 + fee rate)."""
        return (1 + self.slippage_reserve_bps / _BPS) * (1 + self.fee_reserve_bps / _BPS)

    @property
    def sell_proceeds_factor(self) -> Decimal:
        """The least cash a sell brings per unit of reference notional, fees in bps included:
        (1 - slippage) x (1 - fee rate)."""
        return (1 - self.slippage_reserve_bps / _BPS) * (1 - self.fee_reserve_bps / _BPS)

    def reserved_buy_cost(self, notional: Decimal, orders: int = 1) -> Decimal:
        """The most cash buys of this reference notional (in `orders` orders) can take when
        they fill within the reserves: what sizing, rebalancing and the cash check budget."""
        return notional * self.buy_cost_factor + self.fee_reserve_per_order * orders

    def reserved_sell_proceeds(self, notional: Decimal, orders: int = 1) -> Decimal:
        """The least cash sells of this reference notional bring when they fill within the
        reserves (may be negative for a tiny sell that pays a whole per-order fee)."""
        return notional * self.sell_proceeds_factor - self.fee_reserve_per_order * orders

    def affordable_quantity(self, budget: Decimal, price: Decimal, orders: int = 1) -> Decimal:
        """Whole shares at `price` whose reserved buy cost (in `orders` orders) fits `budget`."""
        room = budget - self.fee_reserve_per_order * orders
        if room <= 0 or price <= 0:
            return Decimal(0)
        return floor_quantity(room / (price * self.buy_cost_factor))

    def tightened_by(self, params: StrategyRiskParams | None) -> RiskLimits:
        """These limits, tightened by a strategy's own risk params (never loosened)."""
        if params is None:
            return self
        update: dict[str, Decimal] = {}
        if params.max_position_size is not None:
            update["max_position_size"] = min(self.max_position_size, params.max_position_size)
        if params.max_daily_loss is not None:
            update["max_daily_loss"] = min(self.max_daily_loss, params.max_daily_loss)
        if params.stop_loss_pct is not None:
            current = self.stop_loss_pct
            update["stop_loss_pct"] = (
                params.stop_loss_pct if current is None else min(current, params.stop_loss_pct)
            )
        for key in ("trailing_stop_pct", "take_profit_pct"):
            theirs: Decimal | None = getattr(params, key)
            if theirs is not None:
                ours: Decimal | None = getattr(self, key)
                update[key] = theirs if ours is None else min(ours, theirs)
        changes: dict[str, object] = dict(update)
        if (
            params.protection is not None
            and self.protection is not ProtectionPlacement.EMULATED
            and params.protection is not self.protection
        ):
            changes["protection"] = params.protection
        return self.model_copy(update=changes) if changes else self
