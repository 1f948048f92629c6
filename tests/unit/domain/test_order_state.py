import uuid
from decimal import Decimal

import pytest

from strategy_worker.domain.events import Severity
from strategy_worker.domain.order_state import (
    TRANSITIONS,
    OrderState,
    UpdateOutcome,
    can_transition,
)
from strategy_worker.domain.orders import ExecutionReport, OrderStatus, Side
from strategy_worker.errors import DomainError

from ._factories import fill, intent

S = OrderStatus


def make(quantity: int = 10) -> OrderState:
    return OrderState(intent(quantity=quantity, price="100"))


def test_transition_table_covers_every_status_and_terminals_are_final_except_late_fill() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert TRANSITIONS[S.FILLED] == frozenset()
    assert TRANSITIONS[S.REJECTED] == frozenset()
    assert TRANSITIONS[S.CANCELLED] == frozenset({S.FILLED})
    assert can_transition(S.PENDING, S.ACCEPTED)
    assert not can_transition(S.FILLED, S.CANCELLED)


def test_accept_then_partial_then_full_fill_tracks_exact_average_and_fees() -> None:
    order = make(10)
    assert order.on_accepted("oms-1").applied
    first = order.on_fill(fill(quantity=3, price="100.01", fee="0.5"))
    assert first.applied
    assert first.status is S.PARTIALLY_FILLED
    assert first.fill is not None
    second = order.on_fill(fill(quantity=7, price="100.02", fee="0.25"))
    assert second.status is S.FILLED
    assert order.filled_quantity == 10
    assert order.fill_notional == Decimal("300.03") + Decimal("700.14")
    assert order.avg_fill_price == Decimal("100.0170")
    assert order.fees == Decimal("0.75")
    assert order.oms_order_id == "oms-1"
    assert order.remaining_quantity == 0


def test_same_fill_id_twice_is_ignored_idempotently() -> None:
    order = make(10)
    report = fill(quantity=4, fill_id="dup")
    assert order.on_fill(report).applied
    again = order.on_fill(report)
    assert again.outcome is UpdateOutcome.DUPLICATE
    assert again.fill is None
    assert order.filled_quantity == 4


def test_fill_after_cancel_request_is_applied() -> None:
    order = make(10)
    order.on_accepted()
    assert order.request_cancel()
    update = order.on_fill(fill(quantity=10))
    assert update.applied
    assert update.status is S.FILLED
    assert order.cancel_requested


def test_fill_reported_after_cancelled_is_applied_and_completes_or_keeps_cancelled() -> None:
    order = make(10)
    order.on_accepted()
    order.on_fill(fill(quantity=4))
    assert order.on_cancelled("user").status is S.CANCELLED
    late = order.on_fill(fill(quantity=2))
    assert late.applied
    assert late.status is S.CANCELLED
    assert order.filled_quantity == 6
    final = order.on_fill(fill(quantity=4))
    assert final.status is S.FILLED


def test_overfill_is_not_applied_and_raises_a_critical_anomaly() -> None:
    order = make(10)
    order.on_fill(fill(quantity=8))
    update = order.on_fill(fill(quantity=3))
    assert update.outcome is UpdateOutcome.ANOMALY
    assert update.fill is None
    assert update.risk_event is not None
    assert update.risk_event.severity is Severity.CRITICAL
    assert order.filled_quantity == 8
    assert order.status is S.PARTIALLY_FILLED


def test_fill_for_another_symbol_or_side_is_an_anomaly() -> None:
    order = make(10)
    assert order.on_fill(fill(symbol="MSFT")).outcome is UpdateOutcome.ANOMALY
    assert order.on_fill(fill(side=Side.SELL)).outcome is UpdateOutcome.ANOMALY
    assert order.filled_quantity == 0


def test_fill_after_reject_is_an_anomaly_not_applied() -> None:
    order = make(10)
    order.on_rejected("no funds")
    assert order.reason == "no funds"
    assert order.on_fill(fill(quantity=1)).outcome is UpdateOutcome.ANOMALY


def test_stale_ack_after_fill_is_ignored() -> None:
    order = make(10)
    order.on_fill(fill(quantity=10))
    update = order.on_accepted()
    assert update.outcome is UpdateOutcome.STALE
    assert order.status is S.FILLED


def test_repeated_status_is_a_duplicate() -> None:
    order = make()
    order.on_accepted()
    assert order.on_accepted().outcome is UpdateOutcome.DUPLICATE


def test_reject_after_fills_is_an_anomaly() -> None:
    order = make(10)
    order.on_accepted()
    order.on_fill(fill(quantity=2))
    assert order.on_rejected().outcome is UpdateOutcome.STALE
    fresh = make(10)
    fresh.on_fill(fill(quantity=2))
    assert fresh.status is S.PARTIALLY_FILLED


def test_worker_transition_outside_table_raises_domain_error() -> None:
    order = make()
    order.transition(S.REJECTED)
    with pytest.raises(DomainError):
        order.transition(S.ACCEPTED)
    assert not order.request_cancel()


def test_apply_report_dispatches_acks_fills_and_cancels() -> None:
    order = make(10)
    base = {
        "client_order_id": order.client_order_id,
        "oms_order_id": "oms-9",
        "execution_id": uuid.uuid4(),
        "filled_quantity": Decimal(0),
        "avg_fill_price": Decimal(0),
    }
    assert order.apply_report(ExecutionReport(seq=1, status=S.ACCEPTED, **base)).applied
    assert order.oms_order_id == "oms-9"
    with_fill = ExecutionReport(seq=2, status=S.PARTIALLY_FILLED, fill=fill(quantity=5), **base)
    assert order.apply_report(with_fill).status is S.PARTIALLY_FILLED
    no_fill = ExecutionReport(seq=3, status=S.FILLED, **base)
    assert order.apply_report(no_fill).outcome is UpdateOutcome.STALE
    cancelled = ExecutionReport(seq=4, status=S.CANCELLED, reason="expired", **base)
    assert order.apply_report(cancelled).status is S.CANCELLED
    assert order.snapshot()["filled_quantity"] == 5
