"""The risk ledger's reads and its audit (part of `PostgresStore`); the moves themselves
are part of every commit (`writes.move_ledger`)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from decimal import Decimal

from strategy_worker.adapters.postgres import rows as R
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.adapters.postgres.base import StoreBase
from strategy_worker.store import FLEET, LedgerAudit, LedgerScope

ZERO = Decimal(0)


class LedgerQueries(StoreBase):
    """`ledger_totals` and `audit_ledger`."""

    async def ledger_totals(self, user_ids: Collection[uuid.UUID]) -> dict[LedgerScope, Decimal]:
        """The fleet's total and these users' (0 for a user the ledger has not seen)."""
        async with self._conn("ledger_totals") as conn:
            rows = await conn.fetch(Q.LEDGER_TOTALS, [str(u) for u in user_ids])
        found = {(r["scope"], r["scope_key"]): r["exposure"] for r in rows}
        scopes = [FLEET, *(("user", str(u)) for u in user_ids)]
        return {scope: found.get(scope, ZERO) for scope in scopes}

    async def audit_ledger(self) -> LedgerAudit:
        """Recompute, and repair what differs, in two steps so the common case (nothing
        differs) takes no lock: a read finds the executions whose exposure differs from the
        recomputation; only then one transaction locks those (execution id order), then the
        fleet's row (the order every commit takes them in, so no deadlock; commits that move
        the ledger wait meanwhile), recomputes, repairs the executions and sets every total
        to the sum of what the executions now hold. One auditor at a time (advisory lock)."""
        async with self._conn("audit_ledger") as conn:
            rows = await conn.fetch(Q.LEDGER_RECOMPUTED)
            totals = await conn.fetch("SELECT scope, scope_key, exposure FROM risk_ledger")
        stored = {(r["scope"], r["scope_key"]): r["exposure"] for r in totals}
        differing = [r["execution_id"] for r in rows if r["ledger_exposure"] != r["recomputed"]]
        if not differing and _sums(rows, "ledger_exposure") == _nonzero(stored):
            return LedgerAudit(difference=ZERO)
        async with self._tx("audit_ledger") as conn:
            if not await conn.fetchval(Q.AUDIT_LOCK):
                return LedgerAudit(difference=ZERO)  # another worker audits now
            await conn.fetch(Q.LOCK_EXECUTIONS, sorted(differing))
            await conn.execute(
                "SELECT 1 FROM risk_ledger WHERE scope = 'fleet' AND scope_key = '' FOR UPDATE"
            )
            rows = await conn.fetch(Q.LEDGER_RECOMPUTED)
            chosen = set(differing)
            repaired = {
                r["execution_id"]: (r["ledger_exposure"], r["recomputed"])
                for r in rows
                if r["execution_id"] in chosen and r["ledger_exposure"] != r["recomputed"]
            }
            if repaired:
                await conn.execute(
                    Q.REPAIR_EXPOSURES,
                    list(repaired),
                    [R.num(new) for _, new in repaired.values()],
                )
            held = {
                r["execution_id"]: repaired.get(r["execution_id"], (0, r["ledger_exposure"]))[1]
                for r in rows
            }
            users = {r["execution_id"]: str(r["user_id"]) for r in rows}
            sums: dict[LedgerScope, Decimal] = {FLEET: ZERO}
            for execution_id, exposure in held.items():
                for scope in (FLEET, ("user", users[execution_id])):
                    sums[scope] = sums.get(scope, ZERO) + exposure
            current = {
                (r["scope"], r["scope_key"]): r["exposure"]
                for r in await conn.fetch("SELECT scope, scope_key, exposure FROM risk_ledger")
            }
            ordered = sorted(sums.items())
            await conn.execute(
                Q.SET_LEDGER,
                [s for (s, _), _ in ordered],
                [k for (_, k), _ in ordered],
                [R.num(v) for _, v in ordered],
            )
            await conn.execute(Q.CLEAR_OTHER_USERS, [k for (s, k), _ in ordered if s == "user"])
        difference = sum(
            (abs(sums.get(s, ZERO) - current.get(s, ZERO)) for s in set(sums) | set(current)),
            ZERO,
        )
        return LedgerAudit(difference=difference, repaired=repaired)


def _sums(rows: list, column: str) -> dict[LedgerScope, Decimal]:  # type: ignore[type-arg]
    sums: dict[LedgerScope, Decimal] = {}
    for r in rows:
        for scope in (FLEET, ("user", str(r["user_id"]))):
            sums[scope] = sums.get(scope, ZERO) + r[column]
    return _nonzero(sums)


def _nonzero(totals: dict[LedgerScope, Decimal]) -> dict[LedgerScope, Decimal]:
    return {s: v for s, v in totals.items() if v != 0}
