"""Wire formats: the spec's started event byte for byte, exact numbers, control parsing."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy_worker.domain.orders import (
    Fill,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.messages import (
    ControlAction,
    ControlRequest,
    EventContext,
    EventType,
    RejectCode,
    Rejection,
    SourceRef,
    control_message,
    dead_letter_envelope,
    encode_event,
    encode_json,
    execution_error,
    execution_paused,
    execution_started,
    execution_stopped,
    order_filled,
    order_rejected,
    order_submitted,
    parse_control,
    parse_json_object,
    risk_event,
)

# The spec's "Output: strategy.execution Topic" block, verbatim.
SPEC_STARTED = """{
  "type": "strategy.execution.started",
  "execution_id": "770e8400-e29b-41d4-a716-446655440000",
  "strategy_id": "550e8400-e29b-41d4-a716-446655440000",
  "user_id": "660e8400-e29b-41d4-a716-446655440000",
  "timestamp": "2024-01-01T00:00:00Z",
  "status": "active",
  "initial_orders": [
    {
      "symbol": "AAPL",
      "side": "BUY",
      "quantity": 200,
      "price": 175.50,
      "value": 35100.00
    }
  ]
}"""

CTX = EventContext(
    execution_id=uuid.UUID("770e8400-e29b-41d4-a716-446655440000"),
    strategy_id=uuid.UUID("550e8400-e29b-41d4-a716-446655440000"),
    user_id=uuid.UUID("660e8400-e29b-41d4-a716-446655440000"),
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def intent(quantity: str = "200", price: str = "175.5", seq: int = 1) -> OrderIntent:
    return OrderIntent(
        client_order_id=f"sw-{CTX.execution_id.hex}-{seq:06d}",
        execution_id=CTX.execution_id,
        intent_seq=seq,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(quantity),
        price=Decimal(price),
        purpose=OrderPurpose.INITIAL,
    )


def test_started_event_is_byte_exact_to_the_spec_sample() -> None:
    event = execution_started(CTX, at=T0, initial_orders=[intent()])

    assert encode_json(event, indent=2) == SPEC_STARTED


def test_started_event_on_the_wire_parses_to_the_spec_sample_exactly() -> None:
    wire = encode_event(execution_started(CTX, at=T0, initial_orders=[intent()]))

    decoded = json.loads(wire, parse_float=Decimal)
    assert decoded == json.loads(SPEC_STARTED, parse_float=Decimal)
    assert decoded["initial_orders"][0]["price"] == Decimal("175.50")
    assert json.loads(wire) == json.loads(SPEC_STARTED)  # a plain float parser also agrees


def test_started_event_value_is_the_exact_product_of_quantity_and_price() -> None:
    event = execution_started(CTX, at=T0, initial_orders=[intent("3", "175.1234")])

    line = json.loads(encode_event(event), parse_float=Decimal)["initial_orders"][0]
    assert line == {
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 3,
        "price": Decimal("175.1234"),
        "value": Decimal("525.3702"),
    }


def test_encoder_writes_decimals_from_their_text_without_float() -> None:
    text = encode_json({"a": Decimal("0.1000000000000000055511151231257827"), "b": Decimal("1E+3")})

    assert text == '{"a": 0.1000000000000000055511151231257827, "b": 1000}'


@pytest.mark.parametrize("bad", [1.5, Decimal("NaN"), Decimal("Infinity"), object()])
def test_encoder_refuses_floats_and_non_finite_numbers(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_json({"x": bad})


def test_encoder_matches_json_dumps_for_plain_values() -> None:
    value = {"s": 'é"\n', "n": None, "t": True, "i": -3, "l": [1, [], {}], "d": {"k": "v"}}

    assert encode_json(value) == json.dumps(value, ensure_ascii=False)
    assert encode_json(value, indent=2) == json.dumps(value, ensure_ascii=False, indent=2)


def test_timestamp_is_utc_with_z_even_from_another_zone() -> None:
    moment = datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))

    event = execution_paused(CTX, at=moment, reason="operator")

    assert event["timestamp"] == "2024-01-01T00:00:00Z"


def test_every_event_carries_the_common_fields_and_its_type() -> None:
    fill = Fill(
        fill_id="f-1",
        client_order_id="c-1",
        symbol="AAPL",
        side=Side.BUY,
        quantity=Decimal("50"),
        price=Decimal("175.5"),
        fee=Decimal("0"),
        filled_at=T0,
    )
    events = [
        order_submitted(CTX, at=T0, intent=intent(), oms_order_id="oms-1"),
        order_filled(
            CTX,
            at=T0,
            fill=fill,
            oms_order_id="oms-1",
            status=OrderStatus.PARTIALLY_FILLED,
            filled_quantity=Decimal("50"),
        ),
        order_rejected(
            CTX,
            at=T0,
            order=intent(),
            client_order_id=None,
            source="risk",
            reason_code="MAX_POSITION_SIZE",
            reason="would exceed 30%",
        ),
        risk_event(
            CTX,
            at=T0,
            event_type="DAILY_LOSS_LIMIT",
            severity="CRITICAL",
            description="loss 5%",
            action_taken="HALTED",
        ),
        execution_stopped(
            CTX, at=T0, reason="requested", realized_pnl=Decimal("-12.5"), total_pnl=Decimal(0)
        ),
        execution_error(CTX, at=T0, error_code="OMS_UNAVAILABLE", message="breaker open"),
    ]

    for event in events:
        decoded = json.loads(encode_event(event), parse_float=Decimal)
        assert decoded["type"] in {str(t) for t in EventType}
        assert decoded["execution_id"] == str(CTX.execution_id)
        assert decoded["strategy_id"] == str(CTX.strategy_id)
        assert decoded["user_id"] == str(CTX.user_id)
        assert decoded["timestamp"] == "2024-01-01T00:00:00Z"
    assert json.loads(encode_event(events[1]), parse_float=Decimal)["fee"] == Decimal("0.00")
    assert events[4]["realized_pnl"] == Decimal("-12.50")


# --------------------------------------------------------------------------- control


def control_text(**overrides: object) -> str:
    message: dict[str, object] = {
        "type": "strategy.control",
        "request_id": "880e8400-e29b-41d4-a716-446655440000",
        "execution_id": "770e8400-e29b-41d4-a716-446655440000",
        "user_id": "660e8400-e29b-41d4-a716-446655440000",
        "action": "stop",
        "timestamp": "2024-01-01T00:00:00Z",
        "reason": "user requested",
    }
    for key, value in overrides.items():
        if value is ...:
            message.pop(key)
        else:
            message[key] = value
    return json.dumps(message)


def test_valid_control_message_parses() -> None:
    result = parse_control(control_text())

    assert result == ControlRequest(
        request_id=uuid.UUID("880e8400-e29b-41d4-a716-446655440000"),
        execution_id=uuid.UUID("770e8400-e29b-41d4-a716-446655440000"),
        user_id=uuid.UUID("660e8400-e29b-41d4-a716-446655440000"),
        action=ControlAction.STOP,
        timestamp=T0,
        reason="user requested",
    )


def test_control_by_strategy_id_parses() -> None:
    result = parse_control(
        control_text(execution_id=..., strategy_id=str(CTX.strategy_id), action="pause")
    )

    assert isinstance(result, ControlRequest)
    assert result.strategy_id == CTX.strategy_id
    assert result.execution_id is None


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"action": "liquidate"}, RejectCode.INVALID_VALUE, "action"),
        ({"action": 1}, RejectCode.INVALID_TYPE, "action"),
        ({"user_id": ...}, RejectCode.MISSING_FIELD, "user_id"),
        ({"user_id": "not-a-uuid"}, RejectCode.INVALID_VALUE, "user_id"),
        (
            {"request_id": "{880e8400-e29b-41d4-a716-446655440000}"},
            RejectCode.INVALID_VALUE,
            "request_id",
        ),
        ({"execution_id": ...}, RejectCode.MISSING_FIELD, "execution_id"),
        ({"strategy_id": str(uuid.uuid4())}, RejectCode.INVALID_VALUE, "execution_id"),
        ({"timestamp": "2024-01-01T00:00:00"}, RejectCode.INVALID_VALUE, "timestamp"),
        ({"timestamp": "2024-01-01"}, RejectCode.INVALID_VALUE, "timestamp"),
        ({"type": "strategy.approved"}, RejectCode.INVALID_VALUE, "type"),
        ({"reason": 5}, RejectCode.INVALID_TYPE, "reason"),
        ({"reason": "x" * 501}, RejectCode.INVALID_VALUE, "reason"),
        ({"admin": True}, RejectCode.UNKNOWN_FIELD, "admin"),
    ],
)
def test_bad_control_message_is_rejected_with_code_and_field(
    overrides: dict[str, object], code: RejectCode, field: str
) -> None:
    result = parse_control(control_text(**overrides))

    assert isinstance(result, Rejection)
    assert (result.code, result.field) == (code, field)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", RejectCode.EMPTY_PAYLOAD),
        (b"\xff\xfe", RejectCode.INVALID_ENCODING),
        (b"{", RejectCode.INVALID_JSON),
        (b'{"a": NaN}', RejectCode.INVALID_JSON),
        (b'{"a": Infinity}', RejectCode.INVALID_JSON),
        (b'{"a": 1, "a": 2}', RejectCode.INVALID_JSON),
        (b"[1, 2]", RejectCode.NOT_AN_OBJECT),
        (b"9" * 5000, RejectCode.INVALID_JSON),
        (b"[" * 5000 + b"]" * 5000, RejectCode.INVALID_JSON),
        (b"{" + b" " * 20000 + b"}", RejectCode.OVERSIZED),
    ],
)
def test_hostile_control_payload_is_rejected_not_raised(payload: bytes, code: RejectCode) -> None:
    result = parse_control(payload)

    assert isinstance(result, Rejection)
    assert result.code == code


def test_deep_nesting_is_rejected_within_the_size_limit() -> None:
    assert isinstance(parse_json_object(b"[" * 100_000, max_bytes=1_000_000), Rejection)


def test_control_message_round_trips_through_its_wire_form() -> None:
    request = parse_control(control_text())
    assert isinstance(request, ControlRequest)

    assert parse_control(encode_json(control_message(request))) == request


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
control_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["strategy.control", "x"]) | json_values,
        "request_id": st.uuids().map(str) | json_values,
        "execution_id": st.uuids().map(str) | json_values,
        "strategy_id": st.uuids().map(str) | json_values,
        "user_id": st.uuids().map(str) | json_values,
        "action": st.sampled_from(["stop", "pause", "resume"]) | json_values,
        "timestamp": st.datetimes(timezones=st.timezones()).map(datetime.isoformat) | json_values,
        "reason": st.text(max_size=600) | json_values,
        "extra": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values.map(json.dumps), control_like.map(json.dumps)))
def test_control_parser_never_raises_on_any_json(text: str) -> None:
    result = parse_control(text)

    assert isinstance(result, ControlRequest | Rejection)
    if isinstance(result, Rejection):
        assert result.code in set(RejectCode)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_control_parser_never_raises_on_any_bytes(payload: bytes) -> None:
    assert isinstance(parse_control(payload), ControlRequest | Rejection)


# --------------------------------------------------------------------------- dead letters


def test_dead_letter_envelope_carries_reason_source_and_original_bytes() -> None:
    payload = b'{"type": "strategy.approved", "broken'
    source = str(SourceRef("strategy.approved", 2, 41))

    envelope = dead_letter_envelope(
        payload, code="invalid_json", reason="unterminated string", source=source, at=T0
    )

    assert envelope["reason_code"] == "invalid_json"
    assert envelope["reason"] == "unterminated string"
    assert (envelope["source_topic"], envelope["source_partition"], envelope["source_offset"]) == (
        "strategy.approved",
        2,
        41,
    )
    assert base64.b64decode(str(envelope["payload_base64"])) == payload
    assert json.loads(encode_json(envelope))["dead_lettered_at"] == "2024-01-01T00:00:00Z"


def test_source_ref_round_trips_and_free_form_source_is_none() -> None:
    ref = SourceRef("strategy.approved.dlq/odd", 0, 7)

    assert SourceRef.parse(str(ref)) == ref
    assert SourceRef.parse("paper") is None


# --------------------------------------------------------------------------- control: additive


def test_control_token_is_optional_and_kept_through_a_round_trip() -> None:
    result = parse_control(control_text(control_token="header.claims.signature"))

    assert isinstance(result, ControlRequest)
    assert result.control_token == "header.claims.signature"
    assert parse_control(encode_json(control_message(result))) == result


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (17, RejectCode.INVALID_TYPE),
        ("", RejectCode.INVALID_VALUE),
        ("x" * 4097, RejectCode.INVALID_VALUE),
    ],
)
def test_bad_control_token_is_rejected_at_its_field(token: object, code: RejectCode) -> None:
    result = parse_control(control_text(control_token=token))

    assert isinstance(result, Rejection)
    assert (result.code, result.field) == (code, "control_token")


def test_kill_switch_actions_are_refused_unless_the_caller_implements_them() -> None:
    from strategy_worker.messages import ALL_ACTIONS

    default = parse_control(control_text(action="reduce_only"))
    opted_in = parse_control(control_text(action="reduce_only"), actions=ALL_ACTIONS)

    assert isinstance(default, Rejection)
    assert (default.code, default.field) == (RejectCode.INVALID_VALUE, "action")
    assert isinstance(opted_in, ControlRequest)
    assert opted_in.action is ControlAction.REDUCE_ONLY
