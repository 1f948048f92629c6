"""Reading `entry_rules` / `exit_rules`: the explicit form or the shorthand, into rule trees.

Called at intake by `domain/strategy.py` (strict JSON numbers) and by the runtime when it
rebuilds an execution from its stored `config` JSON (`parse_rules_from_config`, where the
Decimals `StrategyConfig.to_json()` wrote have become strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strategy_worker.domain.rejection import Rejected, Rejection
from strategy_worker.domain.signals.rules import (
    RuleKind,
    RuleSet,
    StrategyRules,
    json_object,
    parse_explicit,
)
from strategy_worker.domain.signals.shorthand import expand_shorthand


def rule_set_or_none(
    value: object, *, kind: RuleKind, strategy_type: str, path: str, stored: bool = False
) -> RuleSet | None:
    """One rule set, or None for absent / `{}` (no rules); raises `Rejected`.

    An object with `all` or `any` is the explicit form; one with `indicators` (and neither)
    is the shorthand, read for `kind` and `strategy_type`.
    """
    if value is None:
        return None
    obj = json_object(value, path)
    if not obj:
        return None
    if "indicators" in obj and "all" not in obj and "any" not in obj:
        return expand_shorthand(
            obj, kind=kind, strategy_type=strategy_type, path=path, stored=stored
        )
    return parse_explicit(obj, path, stored)


def parse_rule_set(
    value: object, *, kind: RuleKind, strategy_type: str, path: str, stored: bool = False
) -> RuleSet | Rejection | None:
    """`rule_set_or_none` returning the `Rejection` instead of raising; never raises."""
    try:
        return rule_set_or_none(
            value, kind=kind, strategy_type=strategy_type, path=path, stored=stored
        )
    except Rejected as exc:
        return exc.rejection
    except RecursionError:
        return Rejection("invalid_rules", path, "nests too deep")


def parse_rules_from_config(config: Mapping[str, Any]) -> StrategyRules | Rejection:
    """The rules in a stored `config` JSON (as `StrategyConfig.to_json()` wrote it); a
    strategy without rules gives `StrategyRules()` (both None)."""
    strategy_type = str(config.get("type", ""))
    found: dict[RuleKind, RuleSet | None] = {}
    for kind in RuleKind:
        key = f"{kind}_rules"
        parsed = parse_rule_set(
            config.get(key),
            kind=kind,
            strategy_type=strategy_type,
            path=f"config.{key}",
            stored=True,
        )
        if isinstance(parsed, Rejection):
            return parsed
        found[kind] = parsed
    return StrategyRules(entry=found[RuleKind.ENTRY], exit=found[RuleKind.EXIT])
