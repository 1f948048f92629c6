"""Protective orders: stop-loss, trailing stop and take-profit legs per position, resting
natively at the OMS or emulated by the worker (`ProtectionBook`), with the trigger rules
shared by the emulator and the paper OMS (`rules`). Pure: no I/O, no clock.
"""

from strategy_worker.domain.protection.book import ProtectionBook, ProtectionStep
from strategy_worker.domain.protection.events import (
    ProtectionEvent,
    ProtectionExitFailed,
    ProtectionExitReleased,
    ProtectionFallback,
    ProtectionOverdue,
    ProtectionPlaced,
    ProtectionTriggered,
)
from strategy_worker.domain.protection.rules import Leg
from strategy_worker.domain.protection.spec import ProtectionSpec

__all__ = [
    "Leg",
    "ProtectionBook",
    "ProtectionEvent",
    "ProtectionExitFailed",
    "ProtectionExitReleased",
    "ProtectionFallback",
    "ProtectionOverdue",
    "ProtectionPlaced",
    "ProtectionSpec",
    "ProtectionStep",
    "ProtectionTriggered",
]
