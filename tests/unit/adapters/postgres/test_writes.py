"""The commit's pure part: a batch is checked and put in lock order before any I/O."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategy_worker.adapters.postgres.writes import merge_updates, plan_commit
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.orders import (
    Fill,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.store import (
    ControlCompletion,
    ControlOutcome,
    ExecutionState,
    ExecutionWrite,
    Fence,
    FillConflictError,
    FillRecord,
    IntentConflictError,
    NewExecution,
    OrderUpdate,
)

T0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
FENCE = Fence(owner_id="w1", epoch=3)


def _intent(execution_id: uuid.UUID, seq: int, quantity: str = "1") -> OrderIntent:
    return OrderIntent(
        client_order_id=client_order_id(execution_id, seq),
        execution_id=execution_id,
        intent_seq=seq,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        price=Decimal(1),
        purpose=OrderPurpose.INITIAL,
    )


def _fill(coid: str, fill_id: str, quantity: str = "1") -> FillRecord:
    return FillRecord(
        fill=Fill(
            fill_id=fill_id,
            client_order_id=coid,
            symbol="AAPL",
            side=Side.BUY,
            quantity=Decimal(quantity),
            price=Decimal("10.5"),
            fee=Decimal(0),
            filled_at=T0,
        )
    )


def _write(execution_id: uuid.UUID | None = None, **changes: object) -> ExecutionWrite:
    eid = execution_id or uuid.uuid4()
    return dataclasses.replace(ExecutionWrite(execution_id=eid, fence=FENCE, version=2), **changes)


def _creation(**changes: object) -> ExecutionWrite:
    execution = NewExecution(
        execution_id=uuid.uuid4(),
        strategy_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        approved_at=T0,
        config={},
        initial_capital=Decimal(100),
        started_at=T0,
        state=ExecutionState.initial(Decimal(100)),
    )
    base = ExecutionWrite(
        execution_id=execution.execution_id,
        fence=Fence(owner_id="w1", epoch=1),
        version=1,
        create=execution,
    )
    return dataclasses.replace(base, **changes)


@given(st.lists(st.booleans(), min_size=0, max_size=30))
def test_plan_puts_creations_and_updates_each_in_execution_id_order(creates: list[bool]) -> None:
    writes = [_creation() if c else _write() for c in creates]

    plan = plan_commit(writes)

    assert [w.execution_id for w in plan.creations] == sorted(
        w.execution_id for w in writes if w.create is not None
    )
    assert [w.execution_id for w in plan.updates] == sorted(
        w.execution_id for w in writes if w.create is None
    )


def test_two_writes_for_one_execution_are_refused() -> None:
    eid = uuid.uuid4()

    with pytest.raises(ValueError, match="two writes"):
        plan_commit([_write(eid), _write(eid, version=3)])


def test_a_creation_must_be_at_version_one_and_epoch_one() -> None:
    with pytest.raises(ValueError, match="version 1 and epoch 1"):
        plan_commit([_creation(version=2)])
    with pytest.raises(ValueError, match="version 1 and epoch 1"):
        plan_commit([_creation(fence=Fence(owner_id="w1", epoch=2))])


def test_only_a_creation_is_at_version_one() -> None:
    with pytest.raises(ValueError, match="only a creation"):
        plan_commit([_write(version=1)])


def test_rows_of_another_execution_are_refused() -> None:
    with pytest.raises(ValueError, match="belongs to"):
        plan_commit([_write(intents=[_intent(uuid.uuid4(), 1)])])


def test_next_intent_seq_that_would_reuse_an_intent_seq_is_refused() -> None:
    eid = uuid.uuid4()

    with pytest.raises(ValueError, match="must exceed"):
        plan_commit([_write(eid, intents=[_intent(eid, 3)], next_intent_seq=3)])


def test_a_fence_without_owner_is_refused() -> None:
    with pytest.raises(ValueError, match="owner_id"):
        plan_commit([_write(fence=Fence(owner_id="", epoch=1))])


def test_identical_repeats_inside_a_batch_are_dropped() -> None:
    eid = uuid.uuid4()
    intent = _intent(eid, 1)
    fill = _fill(intent.client_order_id, "F-1")

    (planned,) = plan_commit([_write(eid, intents=[intent, intent], fills=[fill, fill])]).updates

    assert (planned.intents, planned.fills) == ((intent,), (fill,))


def test_one_client_order_id_with_two_contents_in_a_batch_is_an_intent_conflict() -> None:
    eid = uuid.uuid4()

    with pytest.raises(IntentConflictError):
        plan_commit([_write(eid, intents=[_intent(eid, 1), _intent(eid, 1, quantity="2")])])


def test_one_fill_key_with_two_contents_in_a_batch_is_a_fill_conflict() -> None:
    coid = client_order_id(uuid.uuid4(), 1)

    with pytest.raises(FillConflictError) as caught:
        plan_commit([_write(fills=[_fill(coid, "F-1"), _fill(coid, "F-1", quantity="2")])])
    assert caught.value.retryable is False


def test_one_fill_id_on_two_orders_is_two_fills() -> None:
    eid = uuid.uuid4()
    fills = [_fill(client_order_id(eid, 1), "F-1"), _fill(client_order_id(eid, 2), "F-1")]

    (planned,) = plan_commit([_write(eid, fills=fills)]).updates

    assert planned.fills == tuple(fills)


def test_one_control_request_completed_twice_is_refused() -> None:
    done = ControlCompletion(
        request_id="r1", outcome=ControlOutcome.APPLIED, detail="", completed_at=T0
    )

    with pytest.raises(ValueError, match="completed twice"):
        plan_commit([_write(controls=[done]), _write(controls=[done])])


def test_merged_updates_keep_earlier_fields_a_later_update_leaves_unset() -> None:
    ack = OrderUpdate(
        client_order_id="c1",
        status=OrderStatus.ACCEPTED,
        filled_quantity=Decimal(0),
        oms_order_id="OMS-1",
    )
    filled = OrderUpdate(
        client_order_id="c1",
        status=OrderStatus.FILLED,
        filled_quantity=Decimal(5),
        filled_price=Decimal("10.5"),
    )
    other = OrderUpdate(
        client_order_id="c2", status=OrderStatus.REJECTED, filled_quantity=Decimal(0), reason="no"
    )

    merged = {u.client_order_id: u for u in merge_updates([ack, filled, other])}

    assert merged["c1"].status is OrderStatus.FILLED
    assert merged["c1"].oms_order_id == "OMS-1"
    assert merged["c1"].filled_price == Decimal("10.5")
    assert merged["c2"] == other
