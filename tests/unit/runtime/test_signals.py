"""Strategies' own rules in the runtime, without a server (issue 14, docs/signals.md):
entries gate the first buy, exits close, re-entry waits, stop-loss and trading states keep
priority, rebalancing keeps entered symbols only, decisions are committed with what they
caused, and a rebuilt engine decides as the live one did."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from strategy_worker.domain.orders import OrderPurpose, OrderStatus, Side
from strategy_worker.domain.signals.bars import Bar
from strategy_worker.domain.signals.timeframes import timeframe
from strategy_worker.runtime.wiring import App
from strategy_worker.testing.rig import EPOCH, Rig, default_settings

from .world import (
    admit,
    approved,
    control,
    decisions,
    event_types,
    orders,
    published,
    risk_types,
    run,
)

MINUTE = timeframe("1m")
ABOVE_105 = {"timeframe": "1m", "all": [{"indicator": "PRICE", "op": ">", "value": 105}]}
BELOW_95 = {"timeframe": "1m", "all": [{"indicator": "PRICE", "op": "<", "value": 95}]}


def bar(symbol: str, minute: int, close: str) -> Bar:
    """The `minute`-th one-minute bar after the rig's epoch, flat at `close`."""
    price = Decimal(close)
    return Bar(
        symbol=symbol,
        timeframe=MINUTE,
        start=EPOCH + timedelta(minutes=minute),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(100),
    )


async def close_minute(rig: Rig, symbol: str, minute: int, close: str) -> None:
    """The market at the end of minute `minute`: the price moves to `close`, then the bar
    topic publishes that minute's bar, and the worker gets a second to act on it."""
    end = (EPOCH + timedelta(minutes=minute + 1)).timestamp()
    wait = end - rig.clock.timestamp()
    if wait > 0:
        await rig.run_for(wait)
    rig.set_prices({symbol: Decimal(close)}, announce=False)
    rig.bar_topic.publish([bar(symbol, minute, close)])
    await rig.run_for(1)


def sequence(rig: Rig, execution: uuid.UUID) -> list[tuple[int, str, str, str | None]]:
    """(minute, rule, outcome, gate) of each recorded decision."""
    return [
        (
            int((d.bar_start - EPOCH).total_seconds() // 60),
            str(d.rule),
            str(d.outcome),
            None if d.gate is None else str(d.gate),
        )
        for d in decisions(rig, execution)
    ]


def opening_buys(rig: Rig, execution: uuid.UUID) -> list[Any]:
    return [
        o
        for o in orders(rig, execution)
        if o.side is Side.BUY and o.purpose is OrderPurpose.INITIAL
    ]


async def started(app: App, payload: bytes) -> uuid.UUID:
    (execution,) = await admit(app, payload)
    return execution


def test_an_entry_rule_buys_nothing_at_intake_and_the_started_event_names_who_awaits() -> None:
    async def scenario() -> None:
        rig = Rig(seed=21)
        rig.set_prices({"AAPL": Decimal("100"), "MSFT": Decimal("200")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            gated = await started(
                app, approved({"AAPL": "0.3", "MSFT": "0.3"}, entry_rules=ABOVE_105)
            )
            plain = await started(app, approved({"AAPL": "0.3"}))
            await rig.run_for(3)

            assert orders(rig, gated) == []
            (event,) = published(rig, gated, "started")
            assert event["initial_orders"] == []
            assert event["awaiting_entry"] == ["AAPL", "MSFT"]
            # Without rules: as before, and the spec's shape exactly (no new field).
            (before,) = published(rig, plain, "started")
            assert "awaiting_entry" not in before
            assert [o.symbol for o in orders(rig, plain)] == ["AAPL"]

    run(scenario)


def test_the_first_buy_waits_for_the_bar_on_which_the_entry_holds_and_is_sized_then() -> None:
    async def scenario() -> None:
        rig = Rig(seed=22)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            for minute, close in enumerate(["100", "104", "105"]):
                await close_minute(rig, "AAPL", minute, close)
                assert orders(rig, execution) == []
            await close_minute(rig, "AAPL", 3, "106")

            (buy,) = orders(rig, execution)
            assert (buy.symbol, buy.side, buy.purpose) == ("AAPL", Side.BUY, OrderPurpose.INITIAL)
            # Sized then: 30% of the equity at the mark of that moment, the cash reserve kept.
            assert buy.price == Decimal("106")
            assert buy.quantity * buy.price <= Decimal("30000")
            assert (buy.quantity + 1) * buy.price > Decimal("29900")
            # One decision when the outcome first exists, one when it fires; nothing between.
            assert sequence(rig, execution) == [
                (0, "entry", "not_met", None),
                (3, "entry", "fired", None),
            ]
            await rig.run_for(2)
            assert buy.client_order_id in {o.client_order_id for o in orders(rig, execution)}
            kinds = event_types(rig, execution)
            assert kinds.count("signal_decision") == 2
            assert kinds.index("signal_decision", kinds.index("signal_decision") + 1) < kinds.index(
                "order_submitted"
            )
            fired = published(rig, execution, "signal_decision")[-1]
            assert (fired["outcome"], fired["action"], fired["gate"]) == ("fired", "open", None)
            assert fired["close"] == Decimal("106")
            assert {k: float(v) for k, v in fired["values"].items()} == {"close": 106.0}

    run(scenario)


def test_an_exit_closes_the_position_and_re_entry_waits_for_the_entry_again() -> None:
    async def scenario() -> None:
        rig = Rig(seed=23)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(
                app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105, exit_rules=BELOW_95)
            )
            for minute, close in enumerate(["106", "100", "94", "94", "100", "106"]):
                await close_minute(rig, "AAPL", minute, close)

            rows = orders(rig, execution)
            assert [(o.side, o.purpose) for o in rows] == [
                (Side.BUY, OrderPurpose.INITIAL),
                (Side.SELL, OrderPurpose.EXIT),
                (Side.BUY, OrderPurpose.INITIAL),
            ]
            assert rows[1].quantity == rows[0].quantity
            assert all(o.status is OrderStatus.FILLED for o in rows)
            # Both rules are evaluated on every bar; what is recorded is the rule that
            # matters in the symbol's phase, when it fires or its outcome changes.
            assert sequence(rig, execution) == [
                (0, "entry", "fired", None),
                (2, "exit", "fired", None),
                # Out: the entry matters again (not met since minute 1: nothing to record
                # until it holds again).
                (5, "entry", "fired", None),
            ]

    run(scenario)


def test_a_stop_loss_fires_while_an_exit_is_awaited_then_the_entry_waits_out_the_block() -> None:
    async def scenario() -> None:
        rig = Rig(seed=24)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(
                app,
                approved(
                    {"AAPL": "0.3"},
                    stop_loss="0.05",
                    entry_rules=ABOVE_105,
                    exit_rules={
                        "timeframe": "1m",
                        "all": [{"indicator": "PRICE", "op": "<", "value": 50}],
                    },
                ),
            )
            await close_minute(rig, "AAPL", 0, "110")
            await rig.run_for(2)
            rig.set_prices({"AAPL": Decimal("100")})  # below 110 x 0.95: the stop-loss
            await rig.run_for(3)

            assert [o.purpose for o in orders(rig, execution)] == [
                OrderPurpose.INITIAL,
                OrderPurpose.STOP_LOSS,
            ]
            assert "STOP_LOSS_TRIGGERED" in risk_types(rig, execution)
            # Stopped out: it waits for its entry again, and the block keeps that buy out.
            await close_minute(rig, "AAPL", 1, "106")
            assert sequence(rig, execution)[-1] == (1, "entry", "fired", "reentry_blocked")
            assert len(opening_buys(rig, execution)) == 1

    run(scenario)


def test_a_fired_entry_without_a_current_price_records_its_gate_and_fires_again() -> None:
    async def scenario() -> None:
        rig = Rig(seed=25)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            rig.prices.forget("AAPL")
            await rig.run_for(200)  # its last mark is older than redis.price_max_age
            rig.bar_topic.publish([bar("AAPL", 2, "106")])
            await rig.run_for(1)
            assert sequence(rig, execution) == [(2, "entry", "fired", "no_price")]
            assert orders(rig, execution) == []

            await close_minute(rig, "AAPL", 4, "107")
            assert sequence(rig, execution)[-1] == (4, "entry", "fired", None)
            assert len(opening_buys(rig, execution)) == 1

    run(scenario)


def test_a_paused_execution_acts_on_no_signal_and_records_why() -> None:
    async def scenario() -> None:
        rig = Rig(seed=26)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            await app.worker.handle_control(control(execution, "pause"), "test")
            await close_minute(rig, "AAPL", 0, "106")

            assert sequence(rig, execution) == [(0, "entry", "fired", "paused")]
            assert orders(rig, execution) == []
            await app.worker.handle_control(control(execution, "resume"), "test")
            await close_minute(rig, "AAPL", 1, "106")
            assert len(opening_buys(rig, execution)) == 1

    run(scenario)


def test_rebalancing_keeps_the_weights_of_entered_symbols_only() -> None:
    async def scenario() -> None:
        rig = Rig(seed=27)
        prices = {"AAPL": Decimal("100"), "MSFT": Decimal("100")}
        rig.set_prices(prices)
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(
                app, approved({"AAPL": "0.3", "MSFT": "0.3"}, entry_rules=ABOVE_105)
            )
            await close_minute(rig, "AAPL", 0, "106")
            await rig.run_for(2)
            # AAPL doubles: 30% drifts far above its target; MSFT (awaiting) has none.
            rig.set_prices({"AAPL": Decimal("212"), "MSFT": Decimal("100")})
            await app.worker.monitor.rebalance_cycle()
            await rig.run_for(3)

            rows = orders(rig, execution)
            assert {o.symbol for o in rows} == {"AAPL"}
            assert [(o.side, o.purpose) for o in rows][-1] == (Side.SELL, OrderPurpose.REBALANCE)
            assert "rebalanced" in event_types(rig, execution)

    run(scenario)


def test_exit_rules_alone_buy_at_approval_and_an_exited_symbol_stays_out() -> None:
    async def scenario() -> None:
        rig = Rig(seed=28)
        rig.set_prices({"AAPL": Decimal("100"), "MSFT": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(
                app, approved({"AAPL": "0.3", "MSFT": "0.3"}, exit_rules=BELOW_95)
            )
            await rig.run_for(2)
            (event,) = published(rig, execution, "started")
            assert event["awaiting_entry"] == []
            assert len(orders(rig, execution)) == 2

            await close_minute(rig, "AAPL", 0, "94")
            rig.set_prices({"AAPL": Decimal("150"), "MSFT": Decimal("100")})
            await app.worker.monitor.rebalance_cycle()
            await rig.run_for(3)

            sold = [o for o in orders(rig, execution) if o.purpose is OrderPurpose.EXIT]
            assert [o.symbol for o in sold] == ["AAPL"]
            assert not [
                o for o in orders(rig, execution) if o.symbol == "AAPL" and o.side is Side.BUY
            ][1:]

    run(scenario)


def test_without_a_bar_topic_bars_built_from_the_prices_seen_drive_the_rules() -> None:
    async def scenario() -> None:
        rig = Rig(seed=29)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1") as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            for step in range(8):  # every 30 s; 106 from 14:31:30 on
                rig.set_prices({"AAPL": Decimal("106") if step >= 3 else Decimal("100")})
                await rig.run_for(30)

            # 14:30 began before the desk watched AAPL: dropped as partial, never used.
            assert sequence(rig, execution) == [(1, "entry", "fired", None)]
            (buy,) = orders(rig, execution)
            assert buy.price == Decimal("106")
            built = rig.market.bars("AAPL", MINUTE)
            assert [(b.start - EPOCH, b.open, b.close) for b in built][:1] == [
                (timedelta(minutes=1), Decimal("100"), Decimal("106"))
            ]
            metrics = app.metrics.registry
            assert (
                metrics.get_sample_value("strategy_bars_ignored_total", {"reason": "partial"}) == 1
            )

    run(scenario)


def test_late_and_repeated_bars_are_ignored_and_counted_never_used_twice() -> None:
    async def scenario() -> None:
        rig = Rig(seed=30)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            await close_minute(rig, "AAPL", 1, "100")
            rig.bar_topic.publish([bar("AAPL", 1, "100"), bar("AAPL", 0, "106")])
            rig.bar_topic.publish([bar("AAPL", 5, "106")])  # still forming: look-ahead
            await rig.run_for(2)

            assert sequence(rig, execution) == [(1, "entry", "not_met", None)]
            assert orders(rig, execution) == []
            metrics = app.metrics.registry
            for reason in ("duplicate", "late", "not_closed"):
                value = metrics.get_sample_value("strategy_bars_ignored_total", {"reason": reason})
                assert value == 1, reason

    run(scenario)


def _history(symbol: str, closes: Sequence[float]) -> list[Bar]:
    """Bars before the epoch (stored history for warm-up)."""
    bars = []
    for i, close in enumerate(closes):
        price = Decimal(str(close)).quantize(Decimal("0.01"))
        bars.append(
            Bar(
                symbol=symbol,
                timeframe=MINUTE,
                start=EPOCH - timedelta(minutes=len(closes) - i),
                open=price,
                high=price,
                low=price,
                close=price,
                volume=Decimal(1),
            )
        )
    return bars


RSI_ENTRY = {"timeframe": "1m", "all": [{"indicator": "RSI", "period": 5, "op": "<", "value": 45}]}
RSI_EXIT = {"timeframe": "1m", "all": [{"indicator": "RSI", "period": 5, "op": ">", "value": 60}]}


def _walk(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    price, out = 100.0, []
    for _ in range(n):
        price *= 1 + rng.gauss(0, 0.02)
        out.append(f"{price:.2f}")
    return out


async def _replay(restart_after: int | None) -> list[tuple[Any, ...]]:
    """40 minutes of stored history, then 60 live minutes of an RSI strategy that enters
    and exits; the worker crashes (kill -9) after `restart_after` minutes and a new one
    takes over from the store."""
    rig = Rig(seed=31)
    history = _history("AAPL", [float(p) for p in _walk(40, seed=5)])
    await rig.market.upsert_bars(history, source="import", received_at=EPOCH)
    live = _walk(60, seed=6)
    rig.set_prices({"AAPL": Decimal(live[0])})
    settings = default_settings("w1", lease_seconds=5.0, heartbeat=1.0)
    payload = approved({"AAPL": "0.5"}, entry_rules=RSI_ENTRY, exit_rules=RSI_EXIT)
    async with rig.worker("w1", settings=settings, bar_topic=True) as app:
        await app.start()
        execution = await started(app, payload)
        for minute, close in enumerate(live[: restart_after or len(live)]):
            await close_minute(rig, "AAPL", minute, close)
        if restart_after is not None:
            rig.stores["w1"].crash()
            await app.abandon()
    if restart_after is not None:
        async with rig.worker("w1", settings=settings, bar_topic=True) as app:
            await app.start()
            await rig.run_for(2)
            for minute, close in enumerate(live[restart_after:], start=restart_after):
                await close_minute(rig, "AAPL", minute, close)
    return [
        (d.bar_start, d.rule, d.outcome, d.gate, tuple(sorted(d.values.items())))
        for d in decisions(rig, execution)
    ]


def test_an_engine_rebuilt_from_stored_bars_after_a_crash_decides_as_the_live_one() -> None:
    continuous = run(lambda: _replay(None))
    restarted = run(lambda: _replay(30))

    assert len({d[2] for d in continuous}) >= 2
    assert [d for d in continuous if d[1] == "exit" and d[2] == "fired"]
    assert restarted == continuous


def test_an_exit_cancels_the_working_buy_and_nothing_is_bought_back_up_after_it() -> None:
    # Found by the simulation: an exit that fired while the opening buy was still filling
    # sold only what was held; the rest of the buy filled, and rebalancing bought the
    # exited symbol back to its target.
    async def scenario() -> None:
        from strategy_worker.oms_sim.venue import VenueRules

        rig = Rig(seed=32, rules=VenueRules(partial_fill_slices=2))
        rig.oms.late_fill_on_cancel = 1.0  # and the rest fills although cancelled
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, exit_rules=BELOW_95))
            await rig.run_for(61)
            (buy,) = orders(rig, execution)
            assert buy.status is OrderStatus.PARTIALLY_FILLED
            rig.bar_topic.publish([bar("AAPL", 0, "94")])
            await rig.run_for(2)
            rig.set_prices({"AAPL": Decimal("100")})
            await rig.run_for(2)
            await app.worker.monitor.rebalance_cycle()
            await rig.run_for(3)

            rows = orders(rig, execution)
            assert [(o.side, o.purpose) for o in rows] == [
                (Side.BUY, OrderPurpose.INITIAL),
                (Side.SELL, OrderPurpose.EXIT),
            ]
            sent = rig.oms.venue.get(client_order_id=buy.client_order_id)
            assert sent is not None
            assert sent.status is OrderStatus.CANCELLED
            # What filled after the cancel is still held: the exit rule sells it next time.
            await close_minute(rig, "AAPL", 1, "94")
            assert [(o.side, o.purpose) for o in orders(rig, execution)][-1] == (
                Side.SELL,
                OrderPurpose.EXIT,
            )
            assert not [o for o in orders(rig, execution) if o.side is Side.BUY][1:]

    run(scenario)


def test_signal_retention_prunes_old_decisions_and_bars_as_a_periodic_job() -> None:
    async def scenario() -> None:
        from strategy_worker.config import WorkerConfig
        from strategy_worker.runtime.wiring import _housekeeping

        rig = Rig(seed=33)
        rig.set_prices({"AAPL": Decimal("100")})
        async with rig.worker("w1", bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            await close_minute(rig, "AAPL", 0, "100")
            await close_minute(rig, "AAPL", 1, "106")
            assert len(decisions(rig, execution)) == 2
            store = rig.stores["w1"]
            config = WorkerConfig.model_validate(
                {"signals": {"decision_retention_days": 1, "bar_retention_days": 1}}
            )
            later = _Later(rig)
            jobs = {
                name: (interval, job)
                for name, interval, job in _housekeeping(
                    config, store, later, app.settings, rig.market
                )
            }
            interval, prune = jobs["signal-retention"]
            assert interval == config.retention.interval

            await prune()
            assert len(decisions(rig, execution)) == 2  # younger than a day: kept
            later.ahead = timedelta(days=1, minutes=3)
            await prune()
            assert decisions(rig, execution) == []
            assert rig.market.bars("AAPL", MINUTE) == []

    run(scenario)


class _Later:
    """The rig's clock, `ahead` later (a retention run days after the decisions)."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig
        self.ahead = timedelta(0)

    def now(self) -> Any:
        return self._rig.clock.now() + self.ahead


def test_stored_rules_that_no_longer_parse_make_the_execution_reduce_only_with_an_alert() -> None:
    async def scenario() -> None:
        rig = Rig(seed=34)
        rig.set_prices({"AAPL": Decimal("100")})
        settings = default_settings("w1", lease_seconds=5.0, heartbeat=1.0)
        async with rig.worker("w1", settings=settings, bar_topic=True) as app:
            await app.start()
            execution = await started(app, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            rig.stores["w1"].crash()
            await app.abandon()
        ex = rig.db.executions[execution]
        broken = dict(ex.record.config)
        broken["entry_rules"] = {"all": [{"indicator": "NOPE", "op": "<", "value": 1}]}
        ex.record = dataclasses.replace(ex.record, config=broken)
        async with rig.worker("w1", settings=settings, bar_topic=True) as app:
            await app.start()
            await rig.run_for(3)
            await close_minute(rig, "AAPL", 0, "106")

            state = rig.db.executions[execution].record.state
            assert state.trading_state.value == "REDUCING"
            assert "RULES_UNREADABLE" in risk_types(rig, execution)
            assert orders(rig, execution) == []  # nothing bought, nothing decided
            assert decisions(rig, execution) == []

    run(scenario)


def test_an_entry_the_risk_ledger_refuses_is_decided_again_and_still_recorded() -> None:
    # The engine reads a bar once; a step the ledger makes decide again (another worker
    # took the capacity meanwhile) must decide that same bar again, not lose it.
    async def scenario() -> None:
        from strategy_worker.store import FLEET

        cap = Decimal("250000")

        def capped(owner: str) -> Any:
            base = default_settings(owner)
            return dataclasses.replace(
                base,
                limits=base.limits.model_copy(update={"max_total_exposure": cap}),
                heartbeat=30.0,  # nobody refreshes the ledger totals during the test
            )

        rig = Rig(seed=35)
        rig.set_prices({"AAPL": Decimal("100"), "MSFT": Decimal("100"), "GOOGL": Decimal("100")})
        async with (
            rig.worker("w1", settings=capped("w1"), bar_topic=True) as a,
            rig.worker("w2", settings=capped("w2"), bar_topic=True) as b,
        ):
            await a.start()
            await b.start()
            refusals: list[object] = []
            refused = a.worker.engine._refused

            async def spy(refusal: Any, *, last: bool) -> None:
                refusals.append(refusal)
                await refused(refusal, last=last)

            a.worker.engine._refused = spy  # type: ignore[method-assign]
            await rig.run_for(0.01)  # the bar feeds read
            ruled = await started(a, approved({"AAPL": "0.3"}, entry_rules=ABOVE_105))
            await admit(
                b, approved({"AAPL": "0.3", "MSFT": "0.3", "GOOGL": "0.3"}, capital="250000")
            )
            # At once (w1 has committed nothing since, so it still sees the fleet empty):
            # the minute that just closed, on which the entry holds.
            rig.set_prices({"AAPL": Decimal("106")}, announce=False)
            rig.bar_topic.publish([bar("AAPL", -1, "106")])
            await rig.run_for(2)
            assert refusals, "the ledger never refused the entry: the test tests nothing"

            (fired,) = [d for d in decisions(rig, ruled) if str(d.outcome) == "fired"]
            bought = sum((o.quantity * o.price for o in opening_buys(rig, ruled)), Decimal(0))
            if fired.gate is None:
                assert Decimal(0) < bought < Decimal("30000")  # sized again, at what was left
            else:
                assert str(fired.gate) == "exposure"
                assert bought == 0
            assert rig.db.ledger[FLEET] <= cap

    run(scenario)
