"""Signed control requests: a token binds one request; copies, edits and forgeries fail."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from strategy_worker.auth import (
    ControlIdentity,
    ControlRefusal,
    ControlSigner,
    ControlVerifier,
    RefusalCode,
    Role,
    control_signer_from,
    control_verifier_from,
    may_control,
)
from strategy_worker.auth.keys import key_id, public_pem
from strategy_worker.config_loader import load_config
from strategy_worker.errors import ConfigError
from strategy_worker.messages import (
    ALL_ACTIONS,
    ControlAction,
    ControlRequest,
    control_message,
    encode_json,
    parse_control,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
OWNER = uuid.UUID("660e8400-e29b-41d4-a716-446655440000")
KEY = ed25519.Ed25519PrivateKey.generate()
SIGNER = ControlSigner(KEY, ttl_s=3600)
KEYS = {key_id(KEY.public_key()): KEY.public_key()}


def request(**overrides: object) -> ControlRequest:
    fields: dict[str, object] = {
        "request_id": uuid.UUID("880e8400-e29b-41d4-a716-446655440000"),
        "user_id": OWNER,
        "action": ControlAction.PAUSE,
        "timestamp": NOW,
        "execution_id": uuid.UUID("770e8400-e29b-41d4-a716-446655440000"),
    }
    fields.update(overrides)
    return ControlRequest(**fields)  # type: ignore[arg-type]


def verifier(*, required: bool = True, **kw: object) -> ControlVerifier:
    return ControlVerifier(keys=KEYS, require_signed=required, **kw)  # type: ignore[arg-type]


def refusal(result: ControlIdentity | ControlRefusal) -> RefusalCode:
    assert isinstance(result, ControlRefusal), result
    return result.code


def test_a_signed_request_verifies_with_its_user_and_role_after_the_wire() -> None:
    signed = SIGNER.sign(request(), role=Role.OPERATOR, now=NOW)
    parsed = parse_control(encode_json(control_message(signed)))
    assert isinstance(parsed, ControlRequest)

    result = verifier().verify(parsed, now=NOW + timedelta(minutes=5))

    assert result == ControlIdentity(OWNER, Role.OPERATOR, "token")


@pytest.mark.parametrize(
    "edit",
    [
        {"user_id": uuid.uuid4()},
        {"request_id": uuid.uuid4()},
        {"action": ControlAction.STOP},
        {"execution_id": uuid.uuid4()},
        {"execution_id": None, "strategy_id": uuid.uuid4()},
    ],
)
def test_a_token_copied_onto_another_request_does_not_match(edit: dict[str, object]) -> None:
    token = SIGNER.sign(request(), role=Role.USER, now=NOW).control_token
    tampered = dataclasses.replace(request(), control_token=token, **edit)  # type: ignore[arg-type]

    assert refusal(verifier().verify(tampered, now=NOW)) is RefusalCode.MISMATCH


def test_unsigned_requests_are_refused_only_when_signatures_are_required() -> None:
    assert refusal(verifier().verify(request(), now=NOW)) is RefusalCode.UNSIGNED
    assert verifier(required=False).verify(request(), now=NOW) == ControlIdentity(
        OWNER, Role.USER, "unsigned"
    )


def test_a_bad_token_is_refused_even_when_signatures_are_optional() -> None:
    forger = ControlSigner(ed25519.Ed25519PrivateKey.generate(), ttl_s=3600)
    good = SIGNER.sign(request(), role=Role.USER, now=NOW).control_token or ""
    head, body, sig = good.split(".")
    # One character in the middle: the last ones of a base64url signature carry padding
    # bits, and a changed padding bit can make the token undecodable (MALFORMED) instead.
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    relaxed = verifier(required=False)

    assert refusal(
        relaxed.verify(forger.sign(request(), role=Role.OPERATOR, now=NOW), now=NOW)
    ) is (RefusalCode.UNKNOWN_KEY)
    bad_sig = request(control_token=f"{head}.{body}.{flipped}")
    assert refusal(relaxed.verify(bad_sig, now=NOW)) is RefusalCode.BAD_SIGNATURE
    assert refusal(relaxed.verify(request(control_token="garbage"), now=NOW)) is (
        RefusalCode.MALFORMED
    )


def test_expiry_and_future_issue_are_refused() -> None:
    signed = SIGNER.sign(request(), role=Role.USER, now=NOW)

    assert refusal(verifier().verify(signed, now=NOW + timedelta(hours=1, seconds=31))) is (
        RefusalCode.EXPIRED
    )
    assert refusal(verifier().verify(signed, now=NOW - timedelta(seconds=31))) is (
        RefusalCode.NOT_YET_VALID
    )


def test_a_trusted_kafka_principal_vouches_for_an_unsigned_request() -> None:
    trusting = verifier(trusted_principals=frozenset({"User:ops-console"}))

    assert trusting.verify(request(), now=NOW, kafka_principal="User:ops-console") == (
        ControlIdentity(OWNER, Role.USER, "principal")
    )
    assert refusal(trusting.verify(request(), now=NOW, kafka_principal="User:other")) is (
        RefusalCode.UNSIGNED
    )


def test_only_the_owner_or_an_operator_may_control() -> None:
    stranger = uuid.uuid4()

    assert may_control(ControlIdentity(OWNER, Role.USER, "token"), OWNER)
    assert not may_control(ControlIdentity(stranger, Role.USER, "token"), OWNER)
    assert may_control(ControlIdentity(stranger, Role.OPERATOR, "token"), OWNER)


@given(
    action=st.sampled_from(sorted(ALL_ACTIONS)),
    by_strategy=st.booleans(),
    role=st.sampled_from(list(Role)),
)
def test_every_signed_request_verifies_as_signed(
    action: ControlAction, by_strategy: bool, role: Role
) -> None:
    target = {"execution_id": None, "strategy_id": uuid.uuid4()} if by_strategy else {}
    signed = SIGNER.sign(request(action=action, **target), role=role, now=NOW)

    assert verifier().verify(signed, now=NOW) == ControlIdentity(OWNER, role, "token")


def test_config_requires_signatures_outside_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_DEV_KEY_DIR", str(tmp_path))
    dev = load_config(env={})
    prod_env = {"ENVIRONMENT": "staging"}

    assert not dev.require_signed_control
    assert load_config(env=prod_env).require_signed_control
    assert not load_config(
        env={**prod_env, "SW__CONTROL_AUTH__REQUIRE_SIGNED": "false"}
    ).require_signed_control
    with pytest.raises(ConfigError, match="no verify key"):
        control_verifier_from(load_config(env=prod_env))
    prod = load_config(env={**prod_env, "CONTROL_VERIFY_KEY": public_pem(KEY.public_key())})
    assert control_verifier_from(prod).keys == KEYS
    assert control_signer_from(load_config(env=prod_env)) is None
    # Development: the API signs and the worker verifies with the same generated key pair.
    signer, dev_verifier = control_signer_from(dev), control_verifier_from(dev)
    assert signer is not None
    signed = signer.sign(request(), role=Role.USER, now=NOW)
    assert dev_verifier.verify(signed, now=NOW) == ControlIdentity(OWNER, Role.USER, "token")


def test_keys_come_from_files_named_by_the_environment(tmp_path: Path) -> None:
    from strategy_worker.auth.keys import private_pem

    private, public = tmp_path / "api-control.pem", tmp_path / "api-control.pub"
    private.write_text(private_pem(KEY))
    public.write_text(public_pem(KEY.public_key()))
    env = {
        "ENVIRONMENT": "staging",
        "API_CONTROL_SIGNING_KEY_FILE": str(private),
        "CONTROL_VERIFY_KEY_FILE": str(public),
    }
    config = load_config(env=env)

    signer, verifier = control_signer_from(config), control_verifier_from(config)

    assert signer is not None
    signed = signer.sign(request(), role=Role.USER, now=NOW)
    assert verifier.verify(signed, now=NOW) == ControlIdentity(OWNER, Role.USER, "token")
