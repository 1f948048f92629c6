"""Where each symbol of an execution with rules stands: derived, never stored.

A symbol is *entered* as far as signals are concerned when the committed orders and
positions say so (docs/signals.md, "What rules do to an execution"); nothing else records
it, so a restart, a takeover or a reload restores it exactly:

- with an entry rule: held and not being sold in full, or being bought (a live buy, or one
  waiting for a rate token); the others await their entry signal;
- with exit rules only: every symbol but those an `EXIT` order closed (live, or filled in
  part or whole) that are no longer held (those are out for good);
- without rules: every symbol (no signal ever decides anything).

A symbol still held after its exit (a buy that filled after the exit's sell, an exit the
OMS rejected) stays entered, so its exit rule sells the rest; but it is *exiting*: its last
`EXIT` order is newer than its last opening buy, and rebalancing never buys it back up.
Rebalancing keeps the targets of entered symbols that are not exiting (`rebalance_targets`),
and intake buys nothing of a symbol that awaits its entry (`awaiting_at_intake`,
`without_symbols`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal

from strategy_worker.domain.money import ZERO
from strategy_worker.domain.orders import OrderPurpose, Side
from strategy_worker.domain.signals.engine import Phase
from strategy_worker.domain.strategy import ApprovedStrategy
from strategy_worker.runtime.facts import ExecutionInfo
from strategy_worker.runtime.model import ExecutionModel


def has_entry_rule(info: ExecutionInfo) -> bool:
    return info.rules is not None and info.rules.entry is not None


def entered_symbols(model: ExecutionModel, info: ExecutionInfo) -> set[str]:
    """The symbols entered as far as signals are concerned (see the module docstring).
    Stored rules that cannot be read back count as an entry rule: nothing is bought that
    is not held or being bought already."""
    pending = model.pending_sells()
    held = {
        sym
        for sym, pos in model.portfolio.positions.items()
        if pos.quantity - pending.get(sym, ZERO) > 0
    }
    if has_entry_rule(info) or info.rules_problem is not None:
        live = (o.intent for o in model.orders.values() if o.is_live)
        buying = {i.symbol for i in live if i.side is Side.BUY}
        buying.update(i.symbol for i in model.plans.deferred if i.side is Side.BUY)
        return held | buying
    exited = {
        o.intent.symbol
        for o in model.orders.values()
        if o.intent.purpose is OrderPurpose.EXIT and (o.is_live or o.filled_quantity > 0)
    }
    return set(info.targets) - (exited - held)


def phase_of(symbol: str, entered: set[str], info: ExecutionInfo) -> Phase:
    """The signal engine's phase of `symbol` given the entered set."""
    if symbol in entered:
        return Phase.ENTERED
    return Phase.AWAITING_ENTRY if has_entry_rule(info) else Phase.OUT


def rebalance_targets(info: ExecutionInfo, model: ExecutionModel) -> Mapping[str, Decimal]:
    """The target weights a rebalance brings the portfolio back to: every target without
    rules, else only those of entered symbols (an awaiting or exited symbol has none)."""
    if info.rules is None and info.rules_problem is None:
        return info.targets
    kept = entered_symbols(model, info) - exiting_symbols(model)
    return {sym: weight for sym, weight in info.targets.items() if sym in kept}


def exiting_symbols(model: ExecutionModel) -> set[str]:
    """Symbols whose last `EXIT` order (not rejected unfilled) is newer than their last
    opening buy: closed by their exit rule, whatever is still held of them."""
    last_exit: dict[str, int] = {}
    last_open: dict[str, int] = {}
    for order in model.orders.values():
        intent = order.intent
        if intent.purpose is OrderPurpose.EXIT and (order.is_live or order.filled_quantity > 0):
            last_exit[intent.symbol] = max(last_exit.get(intent.symbol, 0), intent.intent_seq)
        elif intent.purpose is OrderPurpose.INITIAL and intent.side is Side.BUY:
            last_open[intent.symbol] = max(last_open.get(intent.symbol, 0), intent.intent_seq)
    return {sym for sym, seq in last_exit.items() if seq > last_open.get(sym, 0)}


def awaiting_at_intake(info: ExecutionInfo) -> tuple[str, ...]:
    """Symbols intake buys nothing of: with an entry rule every one waits for its signal."""
    return info.symbols if has_entry_rule(info) else ()


def without_symbols(strategy: ApprovedStrategy, symbols: Sequence[str]) -> ApprovedStrategy:
    """The strategy as initial sizing should see it: `symbols` left out of the allocation
    (each is sized when its entry signal fires)."""
    if not symbols:
        return strategy
    gone = set(symbols)
    config = strategy.config
    allocation = {s: w for s, w in config.allocation.items() if s not in gone}
    kept = tuple(s for s in config.symbols if s not in gone)
    return dataclasses.replace(
        strategy, config=dataclasses.replace(config, allocation=allocation, symbols=kept)
    )
