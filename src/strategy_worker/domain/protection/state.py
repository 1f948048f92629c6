"""The protection engine's state per position, and its JSON form (for one JSONB column).

A `Guard` holds everything about one symbol's protection: the position as last told, the
trailing watermark, the latched trigger, the native OCO group resting at the OMS and the
exit released by the worker. Decimals are written as strings and instants as ISO 8601, so
`from_json(to_json(x)) == x` exactly; the format carries a version for later migrations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from strategy_worker.domain.money import ZERO, money_str, to_decimal
from strategy_worker.domain.orders import OrderStatus
from strategy_worker.domain.protection.rules import Leg
from strategy_worker.errors import DomainError

STATE_VERSION = 1

_RANK = {
    OrderStatus.PENDING: 0,
    OrderStatus.ACCEPTED: 1,
    OrderStatus.PARTIALLY_FILLED: 2,
}


def advance_status(current: OrderStatus, reported: OrderStatus) -> OrderStatus:
    """The status after a report that may be stale or out of order: a terminal status stays
    (except CANCELLED -> FILLED, a fill that landed before the cancel), and a live one never
    moves back (ACCEPTED after PARTIALLY_FILLED is stale)."""
    if current.is_terminal:
        if current is OrderStatus.CANCELLED and reported is OrderStatus.FILLED:
            return reported
        return current
    if reported.is_terminal or _RANK[reported] >= _RANK[current]:
        return reported
    return current


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """A leg's trigger, latched: from now on the position is to be exited entirely."""

    leg: Leg
    level: Decimal
    mark: Decimal
    at: datetime
    gap: bool
    by_oms: bool


@dataclass(slots=True, kw_only=True)
class TrackedOrder:
    """A protective order the engine owns: a native leg or an emulated exit."""

    client_order_id: str
    leg: Leg
    quantity: Decimal
    status: OrderStatus = OrderStatus.PENDING
    filled: Decimal = ZERO
    triggered: bool = False
    #: The level it rests at (native STOP / LIMIT legs; trailing: the level when placed).
    level: Decimal | None = None
    reason: str = ""
    attempt: int = 1
    #: The book asked the OMS to cancel it (sent once).
    cancelling: bool = False

    @property
    def live(self) -> bool:
        return not self.status.is_terminal

    def copy(self) -> TrackedOrder:
        return replace(self)


@dataclass(slots=True, kw_only=True)
class NativeGroup:
    """Native legs resting at the OMS as one OCO group, all sized `quantity`."""

    group_id: str
    quantity: Decimal
    legs: list[TrackedOrder]
    placed_at: datetime
    cancelling: bool = False

    @property
    def live(self) -> bool:
        return any(leg.live for leg in self.legs)

    @property
    def filled(self) -> Decimal:
        return sum((leg.filled for leg in self.legs), ZERO)

    @property
    def executing(self) -> bool:
        """The OMS has acted on the group: a leg triggered or (partially) filled."""
        return any(leg.triggered or leg.filled > 0 for leg in self.legs)

    def copy(self) -> NativeGroup:
        return replace(self, legs=[leg.copy() for leg in self.legs])

    @property
    def refused(self) -> bool:
        """The OMS rejected a leg without any fill: do not try native again for this guard."""
        return self.filled == 0 and any(leg.status is OrderStatus.REJECTED for leg in self.legs)


@dataclass(slots=True, kw_only=True)
class Guard:
    """One symbol's protection within an execution."""

    symbol: str
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    #: Non-protective sells in flight (a rebalance, a close): not the exits' to sell.
    selling: Decimal = ZERO
    #: Buys in flight: the position is not settled, natives are (re)armed once it is.
    buying: Decimal = ZERO
    watermark: Decimal | None = None
    mark: Decimal | None = None
    trigger: Trigger | None = None
    native: NativeGroup | None = None
    exit: TrackedOrder | None = None
    #: Counts the openings of this position from flat (a trigger belongs to one opening).
    generation: int = 0
    #: Exits released in this generation (attempts, follow-ups).
    exits_released: int = 0
    failures: int = 0
    retry_at: datetime | None = None
    #: The OMS refused native legs: emulate for the rest of this guard's life.
    native_refused: bool = False
    #: A fallback event was emitted for this generation (said once, not every tick).
    fallback_noted: bool = False
    #: False from an owned order's fill or end until the next `on_position`: nothing is
    #: released on a position that may not show that fill yet.
    position_fresh: bool = True
    #: (quantity, cost basis, watermark) -> the legs' levels: a mark that moves nothing costs
    #: no arithmetic. Not state: never serialized, never compared.
    level_cache: tuple[tuple[Decimal, Decimal, Decimal | None], dict[Leg, Decimal]] | None = field(
        default=None, repr=False, compare=False
    )

    def copy(self) -> Guard:
        """An independent copy (the trigger is immutable and shared; so is the level cache,
        whose answers nobody mutates)."""
        return replace(
            self,
            native=None if self.native is None else self.native.copy(),
            exit=None if self.exit is None else self.exit.copy(),
        )

    @property
    def exposed(self) -> Decimal:
        """What the exits must sell: the position minus other sells in flight."""
        return max(self.quantity - self.selling, ZERO)

    @property
    def alive(self) -> bool:
        """Anything the OMS may still act on (a native leg or an exit)."""
        return (self.native is not None and self.native.live) or (
            self.exit is not None and self.exit.live
        )


# ------------------------------------------------------------------------------ JSON


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else money_str(value)


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None else to_decimal(value)


def _opt_time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _order_to_json(order: TrackedOrder) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "leg": order.leg.value,
        "quantity": money_str(order.quantity),
        "status": order.status.value,
        "filled": money_str(order.filled),
        "triggered": order.triggered,
        "level": _dec(order.level),
        "reason": order.reason,
        "attempt": order.attempt,
        "cancelling": order.cancelling,
    }


def _order_from_json(data: dict[str, Any]) -> TrackedOrder:
    return TrackedOrder(
        client_order_id=data["client_order_id"],
        leg=Leg(data["leg"]),
        quantity=to_decimal(data["quantity"]),
        status=OrderStatus(data["status"]),
        filled=to_decimal(data["filled"]),
        triggered=bool(data["triggered"]),
        level=_opt_dec(data.get("level")),
        reason=str(data.get("reason", "")),
        attempt=int(data.get("attempt", 1)),
        cancelling=bool(data.get("cancelling", False)),
    )


def guard_to_json(guard: Guard) -> dict[str, Any]:
    trigger = guard.trigger
    native = guard.native
    return {
        "quantity": money_str(guard.quantity),
        "cost_basis": money_str(guard.cost_basis),
        "selling": money_str(guard.selling),
        "buying": money_str(guard.buying),
        "watermark": _dec(guard.watermark),
        "mark": _dec(guard.mark),
        "trigger": None
        if trigger is None
        else {
            "leg": trigger.leg.value,
            "level": money_str(trigger.level),
            "mark": money_str(trigger.mark),
            "at": trigger.at.isoformat(),
            "gap": trigger.gap,
            "by_oms": trigger.by_oms,
        },
        "native": None
        if native is None
        else {
            "group_id": native.group_id,
            "quantity": money_str(native.quantity),
            "legs": [_order_to_json(leg) for leg in native.legs],
            "placed_at": native.placed_at.isoformat(),
            "cancelling": native.cancelling,
        },
        "exit": None if guard.exit is None else _order_to_json(guard.exit),
        "generation": guard.generation,
        "exits_released": guard.exits_released,
        "failures": guard.failures,
        "retry_at": None if guard.retry_at is None else guard.retry_at.isoformat(),
        "native_refused": guard.native_refused,
        "fallback_noted": guard.fallback_noted,
        "position_fresh": guard.position_fresh,
    }


def guard_from_json(symbol: str, data: dict[str, Any]) -> Guard:
    trig = data.get("trigger")
    nat = data.get("native")
    ex = data.get("exit")
    return Guard(
        symbol=symbol,
        quantity=to_decimal(data["quantity"]),
        cost_basis=to_decimal(data["cost_basis"]),
        selling=to_decimal(data["selling"]),
        buying=to_decimal(data["buying"]),
        watermark=_opt_dec(data.get("watermark")),
        mark=_opt_dec(data.get("mark")),
        trigger=None
        if trig is None
        else Trigger(
            leg=Leg(trig["leg"]),
            level=to_decimal(trig["level"]),
            mark=to_decimal(trig["mark"]),
            at=datetime.fromisoformat(trig["at"]),
            gap=bool(trig["gap"]),
            by_oms=bool(trig["by_oms"]),
        ),
        native=None
        if nat is None
        else NativeGroup(
            group_id=nat["group_id"],
            quantity=to_decimal(nat["quantity"]),
            legs=[_order_from_json(leg) for leg in nat["legs"]],
            placed_at=datetime.fromisoformat(nat["placed_at"]),
            cancelling=bool(nat["cancelling"]),
        ),
        exit=None if ex is None else _order_from_json(ex),
        generation=int(data["generation"]),
        exits_released=int(data["exits_released"]),
        failures=int(data["failures"]),
        retry_at=_opt_time(data.get("retry_at")),
        native_refused=bool(data["native_refused"]),
        fallback_noted=bool(data.get("fallback_noted", False)),
        position_fresh=bool(data.get("position_fresh", True)),
    )


def guards_to_json(guards: dict[str, Guard]) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "guards": {symbol: guard_to_json(guards[symbol]) for symbol in sorted(guards)},
    }


def guards_from_json(data: dict[str, Any]) -> dict[str, Guard]:
    """Guards from `guards_to_json`'s output; a newer or malformed state is a DomainError."""
    try:
        version = data["version"]
        if version != STATE_VERSION:
            raise DomainError(f"protection state version {version} is not {STATE_VERSION}")
        return {symbol: guard_from_json(symbol, guard) for symbol, guard in data["guards"].items()}
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise DomainError(f"malformed protection state: {exc!r}") from exc
