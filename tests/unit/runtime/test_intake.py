"""Intake without a server: prices, rate limits, replays, conflicts and re-approvals."""

from __future__ import annotations

import json
import time
import uuid

from strategy_worker.domain.orders import OrderStatus
from strategy_worker.runtime.intake import IncomingStrategy
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, event_types, orders, risk_types, run


def test_an_unpriced_symbol_is_skipped_and_bought_once_priced() -> None:
    # Issue 12 item 5: one symbol without a price used to dead-letter the whole strategy.
    async def scenario() -> None:
        rig = Rig(seed=11)
        rig.set_prices({"AAPL": PRICES["AAPL"]})
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3", "MSFT": "0.3"}))
            await rig.run_for(2)

            assert rig.dead_letters.letters == []
            assert [o.symbol for o in orders(rig, execution)] == ["AAPL"]
            assert "PRICE_MISSING" in risk_types(rig, execution)

            rig.set_prices({"MSFT": PRICES["MSFT"]})
            await app.worker.monitor.rebalance_cycle()
            await rig.run_for(2)

            bought = {o.symbol for o in orders(rig, execution) if o.status is OrderStatus.FILLED}
            assert bought == {"AAPL", "MSFT"}

    run(scenario)


def test_rate_limited_first_orders_wait_for_a_token_and_are_all_sent() -> None:
    # Issue 12 item 6: 30 small strategies approved together lost 40 of their 90 first
    # orders to RATE_LIMITED with the shipped limits (50/s and a burst of 200 per worker...
    # here the per-execution bucket is what runs dry: a burst of 2).
    async def scenario() -> None:
        from dataclasses import replace

        from strategy_worker.testing.rig import default_settings

        rig = Rig(seed=12)
        rig.set_prices(PRICES)
        settings = default_settings("w1")
        settings = replace(
            settings, limits=settings.limits.model_copy(update={"execution_order_burst": 2})
        )
        async with rig.worker("w1", settings=settings) as app:
            await app.start()
            messages = [
                approved({"AAPL": "0.2", "MSFT": "0.2", "GOOGL": "0.2"}, capital="20000")
                for _ in range(30)
            ]
            created = await admit(app, *messages)
            await rig.run_for(10)

            assert len(created) == 30
            every = [o for e in created for o in orders(rig, e)]
            assert len(every) == 90
            assert {o.status for o in every} == {OrderStatus.FILLED}
            assert any("ORDER_DEFERRED" in risk_types(rig, e) for e in created)

    run(scenario)


def test_a_replay_is_counted_and_a_conflicting_body_is_dead_lettered() -> None:
    # Issue 12 item 18: both used to be dropped with no log line, metric or event.
    async def scenario() -> None:
        rig = Rig(seed=13)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            message = approved({"AAPL": "0.3"}, timestamp="2024-01-02T14:00:00Z")
            (execution,) = await admit(app, message)
            changed = json.loads(message)
            changed["config"]["name"] = "another strategy under the same key"
            respelled = message.replace(b"2024-01-02T14:00:00Z", b"2024-01-02T15:00:00+01:00")

            assert await admit(app, message) == []
            assert await admit(app, respelled) == []  # the same instant in another notation
            assert await admit(app, json.dumps(changed).encode()) == []

            metrics = app.metrics.registry
            replays = metrics.get_sample_value(
                "strategy_messages_duplicate_total", {"kind": "replay"}
            )
            conflicts = metrics.get_sample_value(
                "strategy_messages_duplicate_total", {"kind": "conflict"}
            )
            assert (replays, conflicts) == (2.0, 1.0)
            assert [code for code, *_ in rig.dead_letters.letters] == ["duplicate_conflict"]
            await rig.run_for(1)
            assert event_types(rig, execution).count("started") == 1

    run(scenario)


def test_re_approving_a_running_strategy_is_refused_so_control_by_strategy_id_is_unambiguous() -> (
    None
):
    # Issue 12 item 11: a second approval started a second concurrent execution.
    async def scenario() -> None:
        rig = Rig(seed=14)
        rig.set_prices(PRICES)
        strategy_id = uuid.uuid4()
        async with rig.worker("w1") as app:
            await app.start()
            (first,) = await admit(app, approved({"AAPL": "0.3"}, strategy_id=strategy_id))
            again = approved(
                {"MSFT": "0.3"}, strategy_id=strategy_id, timestamp="2024-01-02T15:00:00Z"
            )

            assert await admit(app, again) == []
            assert [code for code, *_ in rig.dead_letters.letters] == ["strategy_running"]
            assert set(rig.db.executions) == {first}

    run(scenario)


def test_the_first_order_at_the_oms_is_timed_from_the_message_s_publication() -> None:
    # strategy_publish_to_order_seconds was never observed by the new runtime.
    async def scenario() -> None:
        rig = Rig(seed=36)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            published = time.time() - 0.5  # the producer's stamp, half a second ago
            payload = approved({"AAPL": "0.3", "MSFT": "0.3"})
            await app.worker.handle_strategies([IncomingStrategy(payload, "test", published)])
            await rig.run_for(2)

            samples = {
                s.name: s.value
                for m in app.metrics.publish_to_order_seconds.collect()
                for s in m.samples
            }
            count = samples["strategy_publish_to_order_seconds_count"]
            total = samples["strategy_publish_to_order_seconds_sum"]
            assert count == 1  # one execution, timed at its first order only
            assert 0.5 <= total < 30

    run(scenario)


def test_buys_waiting_for_a_rate_token_stay_in_the_exposure_a_quiet_mark_write_stores() -> None:
    # Simulation seed 180: the monitor's quiet write (valuation and snapshot of executions
    # the marks did not affect) stored `runner.exposure()`, which left out the buys waiting
    # for a rate token; an execution that took such buys while the cycle was acting on
    # others released their reservation in the ledger while they still waited.
    async def scenario() -> None:
        from dataclasses import replace

        from strategy_worker.testing.rig import default_settings

        rig = Rig(seed=14)
        rig.set_prices(PRICES)
        settings = default_settings("w1")
        limits = settings.limits.model_copy(
            update={"execution_order_burst": 1, "execution_orders_per_second": 1 / 600}
        )
        async with rig.worker("w1", settings=replace(settings, limits=limits)) as app:
            await app.start()
            (execution,) = await admit(
                app, approved({"AAPL": "0.2", "MSFT": "0.2", "GOOGL": "0.2"}, capital="20000")
            )
            await rig.run_for(2)
            runner = app.worker.book.get(execution)
            assert runner is not None
            assert len(runner.model.plans.deferred) == 2  # one order left, two wait

            record = rig.db.executions[execution].record
            assert record.ledger_exposure == rig.db.recomputed_exposure(execution)
            assert runner.exposure() == record.ledger_exposure  # what a quiet write stores

    run(scenario)
