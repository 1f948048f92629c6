"""PriceWatch: a fresh price runs the monitor step for exactly the executions it concerns,
a stop is sent once whoever sees the price first, and one failing execution is isolated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from strategy_worker.domain.orders import (
    ExecutionReport,
    Fill,
    OmsOrder,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    Side,
)
from strategy_worker.domain.positions import Portfolio
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.domain.strategy import StrategyRiskParams
from strategy_worker.errors import TransientError
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.runtime.clocks import SystemClock
from strategy_worker.runtime.execution import ExecutionRunner
from strategy_worker.runtime.facts import Outbox, info_from_config
from strategy_worker.runtime.price_watch import PriceWatch, may_act
from strategy_worker.runtime.settings import RuntimeSettings
from strategy_worker.runtime.worker import Worker
from strategy_worker.store import (
    ExecutionState,
    ExecutionStatus,
    Fence,
    RiskEventRecord,
    SnapshotRecord,
    StateWrite,
)

CAPITAL = Decimal("100000")
STOP = Decimal("0.05")  # stop level 95.0000 for a position bought at 100


class FakeStore:
    """Records what the runtime persisted."""

    def __init__(self) -> None:
        self.intents: list[OrderIntent] = []
        self.state_writes: list[uuid.UUID] = []
        self.risk_rows: list[RiskEventRecord] = []
        self.snapshots: list[SnapshotRecord] = []
        self.released: list[uuid.UUID] = []

    async def record_intents(
        self,
        execution_id: uuid.UUID,
        intents: Sequence[OrderIntent],
        *,
        next_intent_seq: int,
        state: ExecutionState,
        fence: Fence | None,
    ) -> None:
        self.intents.extend(intents)
        self.state_writes.append(execution_id)

    async def update_execution_state(
        self, execution_id: uuid.UUID, state: ExecutionState, *, fence: Fence | None
    ) -> None:
        self.state_writes.append(execution_id)

    async def update_execution_states(self, writes: Sequence[StateWrite]) -> set[uuid.UUID]:
        self.state_writes.extend(w.execution_id for w in writes)
        return set()

    async def insert_risk_events(self, events: Sequence[RiskEventRecord]) -> None:
        self.risk_rows.extend(events)

    async def insert_snapshots(self, snapshots: Sequence[SnapshotRecord]) -> None:
        self.snapshots.extend(snapshots)

    async def record_order_reports(self, **_: Any) -> None:
        return None

    async def release_executions(self, owner_id: str, execution_ids: Sequence[uuid.UUID]) -> None:
        self.released.extend(execution_ids)

    async def acquire_executions(self, *_: Any, **__: Any) -> list[Any]:
        return []

    async def get_report_cursor(self, name: str) -> int:
        return 0


class FakeOms:
    """Accepts every order (no fill), except for executions told to blow up."""

    def __init__(self) -> None:
        self.submitted: list[OrderIntent] = []
        self.broken: set[uuid.UUID] = set()

    async def submit_many(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        if intents and intents[0].execution_id in self.broken:
            raise RuntimeError("boom")
        self.submitted.extend(intents)
        return [
            OmsOrder(
                client_order_id=i.client_order_id,
                oms_order_id=f"oms-{i.client_order_id}",
                execution_id=i.execution_id,
                account_id=account_id,
                symbol=i.symbol,
                side=i.side,
                order_type=i.order_type,
                quantity=i.quantity,
                limit_price=None,
                status=OrderStatus.ACCEPTED,
                filled_quantity=Decimal(0),
                avg_fill_price=Decimal(0),
                fills=(),
            )
            for i in intents
        ]

    async def reports(self, *, from_seq: int) -> AsyncIterator[ExecutionReport]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # never reached: no reports in these tests


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[Mapping[str, object]] = []

    async def publish(self, key: str, event: Mapping[str, object]) -> None:
        self.events.append(event)

    async def publish_batch(self, key: str, events: Sequence[Mapping[str, object]]) -> None:
        self.events.extend(events)


class FakePrices:
    def __init__(self, prices: Mapping[str, Decimal] | None = None) -> None:
        self.prices = dict(prices or {})
        self.asked: list[list[str]] = []
        self.down = False

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        self.asked.append(list(symbols))
        if self.down:
            raise TransientError("redis price read failed")
        return {s: self.prices[s] for s in symbols if s in self.prices}


class FakeFeed:
    """Yields what the test puts in its queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Mapping[str, Decimal]] = asyncio.Queue()

    async def updates(self) -> AsyncIterator[Mapping[str, Decimal]]:
        while True:
            yield await self.queue.get()


class Rig:
    def __init__(self, feed: FakeFeed | None = None) -> None:
        self.store = FakeStore()
        self.oms = FakeOms()
        self.events = FakeEvents()
        self.prices = FakePrices()
        self.worker = Worker(
            settings=RuntimeSettings(
                owner_id="test-worker",
                limits=RiskLimits(),
                position_check_interval=3600,
                rebalance_interval=3600,
                reconcile_interval=3600,
                heartbeat=3600,
            ),
            store=self.store,  # type: ignore[arg-type]
            oms=self.oms,  # type: ignore[arg-type]
            prices=self.prices,  # type: ignore[arg-type]
            events=self.events,  # type: ignore[arg-type]
            dead_letters=None,  # type: ignore[arg-type]
            metrics=WorkerMetrics(CollectorRegistry()),
            clock=SystemClock(),
            price_feed=feed,
        )
        self.watch = PriceWatch(self.worker, feed or FakeFeed())

    def runner(
        self,
        held: Mapping[str, int],
        *,
        targets: Sequence[str] = (),
        marked: bool = True,
        stop: Decimal | None = STOP,
    ) -> ExecutionRunner:
        """An active execution holding `held` shares bought at 100 (stop level 95, warning
        zone up to 96.90), valued at 100 unless `marked` is False."""
        worker = self.worker
        execution_id = uuid.uuid4()
        symbols = sorted({*held, *targets})
        weight = str(Decimal("0.9") / len(symbols))
        info = info_from_config(
            execution_id=execution_id,
            strategy_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            config={
                "allocation": dict.fromkeys(symbols, weight),
                "risk_params": {"stop_loss_pct": None if stop is None else str(stop)},
            },
            initial_capital=CAPITAL,
            worker_limits=worker.settings.limits,
        )
        portfolio = Portfolio(CAPITAL)
        for n, (symbol, quantity) in enumerate(sorted(held.items()), start=1):
            portfolio.apply_fill(
                Fill(
                    fill_id=f"f{n}",
                    client_order_id=f"{execution_id}-{n}",
                    symbol=symbol,
                    side=Side.BUY,
                    quantity=Decimal(quantity),
                    price=Decimal(100),
                    fee=Decimal(0),
                    filled_at=datetime.now(UTC),
                )
            )
        runner = ExecutionRunner(
            info=info,
            status=ExecutionStatus.ACTIVE,
            portfolio=portfolio,
            risk=worker.risk_manager.new_execution(
                execution_id,
                start_equity=CAPITAL,
                risk_params=StrategyRiskParams(stop_loss_pct=stop),
            ),
            next_seq=len(held) + 1,
            fence=Fence(owner_id="test-worker", epoch=1),
            store=self.store,  # type: ignore[arg-type]
            oms=self.oms,  # type: ignore[arg-type]
            events=self.events,  # type: ignore[arg-type]
            risk_manager=worker.risk_manager,
            metrics=worker.metrics,
            clock=worker.clock,
            worker=worker,
        )
        if marked:
            runner.valuate(dict.fromkeys(held, Decimal(100)))
        worker.runners[execution_id] = runner
        return runner

    def stops(self, runner: ExecutionRunner | None = None) -> list[OrderIntent]:
        return [
            i
            for i in self.oms.submitted
            if i.purpose is OrderPurpose.STOP_LOSS
            and (runner is None or i.execution_id == runner.execution_id)
        ]


async def until(condition: Callable[[], bool]) -> None:
    """Poll (the watch runs in the worker's background task) for at most 5 s."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


async def test_batch_checks_only_executions_holding_its_symbols() -> None:
    rig = Rig()
    aapl = rig.runner({"AAPL": 100})
    msft = rig.runner({"MSFT": 100})
    only_targets_aapl = rig.runner({"MSFT": 50}, targets=["AAPL"])

    checked = await rig.watch.on_prices({"AAPL": Decimal("94.00")})

    assert checked == 1
    assert aapl.last_prices["AAPL"] == Decimal("94.00")
    assert "AAPL" not in msft.last_prices
    assert "AAPL" not in only_targets_aapl.last_prices
    assert [(i.execution_id, i.symbol) for i in rig.stops()] == [(aapl.execution_id, "AAPL")]
    assert rig.store.snapshots == []  # snapshots stay on the monitor's cadence


async def test_price_that_can_change_nothing_is_left_to_the_cycle() -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": 100})

    checked = await rig.watch.on_prices({"AAPL": Decimal("99.50")})  # far above the zone

    assert checked == 0
    assert runner.last_prices["AAPL"] == Decimal(100)  # the cycle refreshes marks
    assert rig.oms.submitted == []
    assert rig.store.state_writes == []
    assert rig.store.risk_rows == []


async def test_daily_loss_reached_by_a_price_halts_at_once() -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": 900}, stop=None)  # loss limit 5,000 = 5% of 100,000

    assert await rig.watch.on_prices({"AAPL": Decimal("95.00")}) == 0  # 4,500 lost
    assert await rig.watch.on_prices({"AAPL": Decimal("94.40")}) == 1  # 5,040 lost

    assert runner.risk.halted
    assert [r.event_type for r in rig.store.risk_rows] == [
        "DAILY_LOSS_LIMIT_REACHED",
        "TRADING_STATE_CHANGED",
    ]
    assert rig.store.state_writes == [runner.execution_id]
    assert rig.oms.submitted == []  # a halt stops new buys; it sells nothing by itself


async def test_price_through_stop_sends_one_close_whoever_sees_it_next() -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": 100, "MSFT": 10})

    await rig.watch.on_prices({"AAPL": Decimal("94.00")})
    await rig.watch.on_prices({"AAPL": Decimal("93.00")})
    rig.prices.prices = {"AAPL": Decimal("92.00"), "MSFT": Decimal("100")}
    await rig.worker.monitor_cycle()

    [stop] = rig.stops()
    assert (stop.symbol, stop.side, stop.quantity) == ("AAPL", Side.SELL, Decimal(100))
    assert stop.execution_id == runner.execution_id
    assert [i.client_order_id for i in rig.store.intents] == [stop.client_order_id]
    assert runner.risk.stops.is_blocked("AAPL")
    kinds = [e["type"] for e in rig.events.events]
    assert kinds.count("strategy.execution.stop_loss_triggered") == 1
    assert [r.event_type for r in rig.store.risk_rows].count("STOP_LOSS_TRIGGERED") == 1


async def test_warning_zone_price_persists_state_without_orders() -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": 100})

    await rig.watch.on_prices({"AAPL": Decimal("96.00")})  # above 95, within the 2% buffer

    assert rig.oms.submitted == []
    assert [r.event_type for r in rig.store.risk_rows] == ["STOP_LOSS_WARNING"]
    assert rig.store.state_writes == [runner.execution_id]
    assert rig.store.snapshots == []


async def test_failing_execution_is_isolated_from_the_others() -> None:
    rig = Rig()
    broken = rig.runner({"AAPL": 100})
    healthy = rig.runner({"AAPL": 40})
    rig.oms.broken.add(broken.execution_id)

    await rig.watch.on_prices({"AAPL": Decimal("90.00")})

    assert broken.status is ExecutionStatus.ERROR
    assert broken.execution_id not in rig.worker.runners
    assert rig.store.released == [broken.execution_id]
    [stop] = rig.stops()
    assert (stop.execution_id, stop.quantity) == (healthy.execution_id, Decimal(40))
    assert healthy.running


async def test_held_symbol_without_a_mark_is_read_before_valuing() -> None:
    rig = Rig()
    rig.prices.prices = {"MSFT": Decimal("100")}
    runner = rig.runner({"AAPL": 100, "MSFT": 100}, marked=False)
    marked = rig.runner({"AAPL": 100, "MSFT": 100})

    assert await rig.watch.on_prices({"AAPL": Decimal("99")}) == 1  # never valued: checked
    assert await rig.watch.on_prices({"AAPL": Decimal("94")}) == 2

    assert rig.prices.asked == [["MSFT"]]  # once, for the runner that had no mark
    assert runner.last_prices == {"AAPL": Decimal("94"), "MSFT": Decimal("100")}
    assert marked.last_prices == {"AAPL": Decimal("94"), "MSFT": Decimal("100")}


@settings(max_examples=300, deadline=None)
@given(
    quantity=st.integers(min_value=1, max_value=900),
    before=st.decimals(min_value=50, max_value=150, places=2),
    after=st.decimals(min_value=50, max_value=150, places=2),
    stop=st.sampled_from([None, Decimal("0.01"), Decimal("0.05"), Decimal("0.2")]),
)
def test_runner_deemed_quiet_would_get_nothing_from_the_full_step(
    quantity: int, before: Decimal, after: Decimal, stop: Decimal | None
) -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": quantity, "MSFT": 50}, stop=stop)
    runner.monitor({"AAPL": before, "MSFT": Decimal(100)}, Outbox())  # the state `before` left
    blocked, halted = dict(runner.risk.stops.stopped_out), runner.risk.halted

    if may_act(runner, {"AAPL": after}, rig.worker.clock.now().timestamp()):
        return
    out = Outbox()
    intents = runner.monitor({"AAPL": after}, out)

    assert intents == []
    assert out.risk_rows == []
    assert out.events == []
    assert (runner.risk.stops.stopped_out, runner.risk.halted) == (blocked, halted)


async def test_stopped_execution_is_not_checked() -> None:
    rig = Rig()
    runner = rig.runner({"AAPL": 100})
    runner.status = ExecutionStatus.STOPPED

    assert await rig.watch.on_prices({"AAPL": Decimal("90")}) == 0
    assert rig.oms.submitted == []


async def test_worker_with_a_feed_reacts_and_survives_a_failed_batch() -> None:
    feed = FakeFeed()
    rig = Rig(feed)
    rig.runner({"AAPL": 100, "MSFT": 100}, marked=False)
    await rig.worker.start()
    try:
        assert "price-watch" in {t.get_name() for t in rig.worker._loops}
        rig.prices.down = True  # the missing MSFT mark cannot be read: batch skipped
        await feed.queue.put({"AAPL": Decimal("90")})
        await until(lambda: len(rig.prices.asked) == 1 and feed.queue.empty())
        assert rig.oms.submitted == []

        rig.prices.down = False
        rig.prices.prices = {"MSFT": Decimal("100")}
        await feed.queue.put({"AAPL": Decimal("90")})
        await until(lambda: bool(rig.oms.submitted))
        [stop] = rig.stops()
        assert stop.symbol == "AAPL"
    finally:
        await rig.worker.shutdown("handover")
