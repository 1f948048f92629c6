"""The submission queue (runtime/submit.py): the orders of many executions in one batch,
their answers in one commit, and every guarantee of sending per execution kept."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from strategy_worker.domain.orders import OrderIntent, OrderPurpose, OrderStatus, Side
from strategy_worker.errors import OmsError
from strategy_worker.ports import SubmitEntry, SubmitOutcome
from strategy_worker.runtime.engine import may_leave
from strategy_worker.runtime.step import closing
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, control, event_types, orders, run


class _Gate:
    """Wraps the rig's venue: records every batch and can hold batches until opened."""

    def __init__(self, rig: Rig) -> None:
        self.sizes: list[int] = []
        self.executions: list[int] = []
        self.open = asyncio.Event()
        self.open.set()
        inner = rig.oms.submit_batch

        async def submit_batch(entries: Sequence[SubmitEntry]) -> list[SubmitOutcome]:
            self.sizes.append(sum(len(e.intents) for e in entries))
            self.executions.append(len({e.intents[0].execution_id for e in entries}))
            await self.open.wait()
            return await inner(entries)

        rig.oms.submit_batch = submit_batch  # type: ignore[method-assign]


def test_one_poll_of_strategies_leaves_in_one_batch_and_is_answered_in_one_commit() -> None:
    async def scenario() -> None:
        rig = Rig(seed=31)
        rig.set_prices(PRICES)
        gate = _Gate(rig)
        async with rig.worker("w1") as app:
            await app.start()
            before = rig.db.commits
            payloads = [approved({"AAPL": "0.2", "MSFT": "0.2"}) for _ in range(20)]
            executions = await admit(app, *payloads)
            await rig.run_for(0.01)

            assert gate.sizes == [40]  # 20 executions x 2 orders, one batch
            assert gate.executions == [20]
            # The intake's commit, then ONE commit for all 20 executions' answers.
            assert rig.db.commits - before == 2
            assert all(o.status is OrderStatus.FILLED for e in executions for o in orders(rig, e))
            assert app.worker.engine.submitter.batches == 1

    run(scenario)


def test_a_backlog_coalesces_into_bounded_batches_while_others_are_in_flight() -> None:
    async def scenario() -> None:
        rig = Rig(seed=32)
        rig.set_prices(PRICES)
        gate = _Gate(rig)
        async with rig.worker("w1") as app:
            await app.start()
            gate.open.clear()  # the OMS is slow: the first batches stay in flight
            for _ in range(12):
                await admit(app, approved({"AAPL": "0.1", "MSFT": "0.1", "GOOGL": "0.1"}))
                await rig.run_for(0.001)
            held = list(gate.sizes)
            gate.open.set()
            await rig.run_for(1)

            # Four senders took one poll each; the other eight polls waited and then
            # left together in one batch (24 orders), not eight.
            assert held == [3, 3, 3, 3]
            assert gate.sizes == [3, 3, 3, 3, 24]
            assert app.worker.engine.submitter.queued == 0

    run(scenario)


def test_a_buy_that_may_no_longer_leave_when_its_batch_is_cut_stays_unsent() -> None:
    # The last check before leaving runs on the state committed when the batch is cut: a
    # pause committed while the buy waited in the queue holds it back.
    async def scenario() -> None:
        rig = Rig(seed=33)
        rig.set_prices(PRICES)
        gate = _Gate(rig)
        async with rig.worker("w1") as app:
            await app.start()
            submitter = app.worker.engine.submitter
            submitter._in_flight = 1  # one sender: what follows waits in the queue
            gate.open.clear()
            await admit(app, approved({"AAPL": "0.2"}))
            await rig.run_for(0.001)
            (waiting,) = await admit(app, approved({"MSFT": "0.2"}))
            await rig.run_for(0.001)
            assert submitter.queued == 1
            await app.worker.handle_control(control(waiting, "pause"), "test")
            gate.open.set()
            await rig.run_for(5)

            assert gate.sizes == [1]  # the paused execution's buy never left
            assert {o.client_order_id for _, o in rig.oms.received} == {
                o.client_order_id for o in orders(rig, (await _first(app, waiting)))
            }
            assert [o.status for o in orders(rig, waiting)] == [OrderStatus.CANCELLED]
            assert "order_rejected" in event_types(rig, waiting)

    run(scenario)


async def _first(app: object, other: object) -> object:
    book = app.worker.book  # type: ignore[attr-defined]
    return next(e for e in book.ids() if e != other)


def test_a_batch_the_oms_never_answered_stays_recorded_and_is_reconciled() -> None:
    async def scenario() -> None:
        rig = Rig(seed=34)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            rig.oms.down_until = rig.clock.timestamp() + 3  # the OMS is unreachable
            executions = await admit(
                app,
                approved({"AAPL": "0.2"}),
                approved({"MSFT": "0.2"}),
                approved({"GOOGL": "0.2"}),
            )
            await rig.run_for(0.5)
            assert all(o.status is OrderStatus.PENDING for e in executions for o in orders(rig, e))
            await rig.run_for(30)  # reconciliation with backoff, once the OMS answers

            assert all(o.status is OrderStatus.FILLED for e in executions for o in orders(rig, e))
            cids = [o.client_order_id for _, o in rig.oms.received]
            assert len(cids) == len(set(cids)) == 3  # each order reached the OMS once

    run(scenario)


def test_an_entry_the_oms_refuses_sends_only_its_execution_to_reconciliation() -> None:
    async def scenario() -> None:
        rig = Rig(seed=35)
        rig.set_prices(PRICES)
        inner = rig.oms.submit_batch
        refused_once: set[str] = set()

        async def submit_batch(entries: Sequence[SubmitEntry]) -> list[SubmitOutcome]:
            outcomes = await inner([e for e in entries if e.intents[0].symbol != "MSFT"])
            answers = iter(outcomes)
            out = []
            for entry in entries:
                cid = entry.intents[0].client_order_id
                if entry.intents[0].symbol == "MSFT" and cid not in refused_once:
                    refused_once.add(cid)
                    out.append(SubmitOutcome(error=_refusal()))
                elif entry.intents[0].symbol == "MSFT":
                    out.extend(await inner([entry]))
                else:
                    out.append(next(answers))
            return out

        rig.oms.submit_batch = submit_batch  # type: ignore[method-assign]
        async with rig.worker("w1") as app:
            await app.start()
            fine, refused = await admit(app, approved({"AAPL": "0.2"}), approved({"MSFT": "0.2"}))
            await rig.run_for(0.01)
            assert [o.status for o in orders(rig, fine)] == [OrderStatus.FILLED]
            assert [o.status for o in orders(rig, refused)] == [OrderStatus.PENDING]
            await rig.run_for(10)  # reconciliation: the OMS never saw it, sent again

            assert [o.status for o in orders(rig, refused)] == [OrderStatus.FILLED]
            assert [o.side for o in orders(rig, refused)] == [Side.BUY]

    run(scenario)


def _refusal() -> OmsError:
    return OmsError("refused (test)", retryable=False)


def test_a_sell_leaves_only_while_it_fits_in_what_is_held_now() -> None:
    # Simulation seed 120: an exit was decided on 214 shares; a native trailing stop sold
    # them before the exit's batch was cut, and the exit still left (a sell of 214 with 0
    # held). The last check now bounds sells by what is held when the batch is cut.
    async def scenario() -> None:
        rig = Rig(seed=34)
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)
            runner = app.worker.book.get(execution)
            assert runner is not None
            position = runner.model.portfolio.positions["AAPL"]

            def sell(quantity: Decimal, purpose: OrderPurpose = OrderPurpose.EXIT) -> OrderIntent:
                intent = closing("AAPL", quantity, position.last_price, execution, purpose)
                return replace(intent, client_order_id=f"test-{quantity}-{purpose.value}")

            assert may_leave(runner, sell(position.quantity))
            assert not may_leave(runner, sell(position.quantity + 1))
            # Protective exits are the protection book's to bound (one per trigger).
            assert may_leave(runner, sell(position.quantity + 1, OrderPurpose.STOP_LOSS))

    run(scenario)
