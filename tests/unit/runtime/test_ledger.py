"""The total exposure limit holds across workers (issue 13), on the in-memory world."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from strategy_worker.domain.orders import Side
from strategy_worker.store import FLEET
from strategy_worker.testing.rig import Rig, default_settings

from .world import PRICES, admit, approved, event_types, orders, run

CAP = Decimal("250000")


def _settings(owner: str, **limits: object):  # type: ignore[no-untyped-def]
    base = default_settings(owner)
    return replace(
        base,
        limits=base.limits.model_copy(update={"max_total_exposure": CAP, **limits}),
        heartbeat=5.0,
    )


def _bought(rig: Rig) -> Decimal:
    return sum(
        (o.quantity * o.price for o in rig.db.orders.values() if o.side is Side.BUY),
        Decimal(0),
    )


def test_two_workers_admitting_at_once_never_buy_past_the_fleet_cap() -> None:
    # Two lanes of 8 copies of a $100,000 strategy each sized against the same exposure
    # figure recorded $1,430,960 of buys against a $1,000,000 limit.
    async def scenario() -> None:
        rig = Rig(seed=41)
        rig.set_prices(PRICES)
        async with (
            rig.worker("w1", settings=_settings("w1")) as a,
            rig.worker("w2", settings=_settings("w2")) as b,
        ):
            await a.start()
            await b.start()
            lane = [approved({"AAPL": "0.3", "MSFT": "0.3", "GOOGL": "0.3"}) for _ in range(16)]
            import asyncio

            await asyncio.gather(admit(a, *lane[:8]), admit(b, *lane[8:]))
            await rig.run_for(10)

            assert _bought(rig) <= CAP
            assert rig.db.ledger[FLEET] <= CAP
            assert rig.db.ledger[FLEET] == sum(
                (e.record.ledger_exposure for e in rig.db.executions.values()), Decimal(0)
            )

    run(scenario)


def test_a_strategy_the_capacity_cannot_fund_is_refused_with_an_event() -> None:
    async def scenario() -> None:
        rig = Rig(seed=42)
        rig.set_prices(PRICES)
        async with rig.worker("w1", settings=_settings("w1")) as app:
            await app.start()
            first = await admit(
                app, approved({"AAPL": "0.3", "MSFT": "0.3", "GOOGL": "0.3"}, capital="260000")
            )
            second = await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}, capital="100000"))
            await rig.run_for(2)

            assert len(first) == 1  # 234,000 asked, 250,000 left: funded in full
            assert second == []  # 16,000 left of 60,000 asked: under half, refused
            refused = [
                p.event for p in rig.events.published if p.event.event_type.endswith(".refused")
            ]
            assert len(refused) == 1
            assert refused[0].payload["reason_code"] == "insufficient_capacity"
            assert [code for code, *_ in rig.dead_letters.letters] == ["insufficient_capacity"]
            refusals = app.metrics.registry.get_sample_value(
                "strategy_unfunded_total", {"outcome": "refused"}
            )
            assert refusals == 1.0

    run(scenario)


def test_a_strategy_funded_above_the_minimum_starts_scaled_down_and_says_how_much() -> None:
    async def scenario() -> None:
        rig = Rig(seed=43)
        rig.set_prices(PRICES)
        async with rig.worker("w1", settings=_settings("w1")) as app:
            await app.start()
            await admit(
                app, approved({"AAPL": "0.3", "MSFT": "0.3", "GOOGL": "0.3"}, capital="200000")
            )
            (scaled,) = await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}, capital="150000"))
            await rig.run_for(2)

            started = next(
                p.event.payload
                for p in rig.events.published
                if p.event.execution_id == scaled and p.event.event_type.endswith(".started")
            )
            assert Decimal("0.5") <= started["funded_fraction"] < 1
            assert "ALLOCATION_SCALED" in [
                r.event_type for r in rig.db.risk_events.values() if r.execution_id == scaled
            ]
            assert _bought(rig) <= CAP
            assert "started" in event_types(rig, scaled)

    run(scenario)


def test_a_user_cap_holds_for_that_user_alone() -> None:
    async def scenario() -> None:
        import uuid

        rig = Rig(seed=44)
        rig.set_prices(PRICES)
        settings = _settings("w1", max_user_exposure=Decimal("50000"))
        alice, bob = uuid.uuid4(), uuid.uuid4()
        async with rig.worker("w1", settings=settings) as app:
            await app.start()
            mine = await admit(app, *(approved({"AAPL": "0.3"}, user_id=alice) for _ in range(3)))
            theirs = await admit(app, approved({"MSFT": "0.3"}, user_id=bob))
            await rig.run_for(2)

            alice_buys = sum(
                (o.quantity * o.price for e in mine for o in orders(rig, e) if o.side is Side.BUY),
                Decimal(0),
            )
            assert alice_buys <= Decimal("50000")
            assert len(theirs) == 1
            assert orders(rig, theirs[0])
            assert rig.db.ledger[("user", str(alice))] <= Decimal("50000")

    run(scenario)


def test_the_audit_finds_and_repairs_a_ledger_that_drifted() -> None:
    async def scenario() -> None:
        rig = Rig(seed=45)
        rig.set_prices(PRICES)
        async with rig.worker("w1", settings=_settings("w1")) as app:
            await app.start()
            (_execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            right = rig.db.ledger[FLEET]
            rig.db.ledger[FLEET] += Decimal("12345")  # an out-of-band change

            await app.worker.audit_ledger()

            assert rig.db.ledger[FLEET] == right
            assert (
                app.metrics.registry.get_sample_value("strategy_risk_ledger_difference") == 12345.0
            )

    run(scenario)


def test_a_quiet_mark_write_moves_the_ledger_and_the_workers_view_of_it_alike() -> None:
    # The monitor's quiet write stores the execution's new exposure (its positions at the
    # new marks); the runner kept the amount of its last commit, so the next step's check
    # took the wrong amount out of the fleet's total.
    async def scenario() -> None:
        rig = Rig(seed=31)
        rig.set_prices(PRICES)
        async with rig.worker("w1", settings=_settings("w1")) as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            before = rig.db.executions[execution].record
            runner = app.worker.book.get(execution)
            assert runner is not None
            assert runner.ledger_exposure == before.ledger_exposure

            moved = Decimal(PRICES["AAPL"]) * Decimal("1.01")
            rig.set_prices({"AAPL": moved}, announce=False)  # no step: a quiet mark
            await app.worker.monitor.cycle()

            after = rig.db.executions[execution].record
            assert after.version == before.version  # written by the quiet path
            assert after.ledger_exposure > before.ledger_exposure
            assert runner.ledger_exposure == after.ledger_exposure
            assert rig.db.ledger[FLEET] == after.ledger_exposure

    run(scenario)
