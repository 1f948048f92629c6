"""Bearer tokens: every refusal has its code, and `sub` + roles make the principal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from strategy_worker.auth import AuthFailure, AuthFailureCode, Principal, Role, TokenVerifier
from strategy_worker.auth.keys import DevKeys, key_id, load_public_keys, public_pem
from strategy_worker.auth.tokens import dev_signing_key, issue_token, token_verifier_from
from strategy_worker.config_loader import load_config
from strategy_worker.errors import ConfigError

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
USER = uuid.UUID("660e8400-e29b-41d4-a716-446655440000")
KEY = ed25519.Ed25519PrivateKey.generate()


def verifier(**overrides: object) -> TokenVerifier:
    options: dict[str, object] = {
        "algorithm": "EdDSA",
        "keys": {key_id(KEY.public_key()): KEY.public_key()},
    }
    options.update(overrides)
    return TokenVerifier(**options)  # type: ignore[arg-type]


def token(*, operator: bool = False, key: object = KEY, ttl: float = 600, **kw: object) -> str:
    return issue_token(
        user_id=USER,
        operator=operator,
        key=key,  # type: ignore[arg-type]
        algorithm="EdDSA",
        now=NOW,
        ttl_s=ttl,
        **kw,  # type: ignore[arg-type]
    )


def test_a_valid_token_gives_its_user_and_role() -> None:
    assert verifier().verify(token(), now=NOW) == Principal(USER, Role.USER)
    assert verifier().verify(token(operator=True), now=NOW) == Principal(USER, Role.OPERATOR)


def code_of(result: Principal | AuthFailure) -> AuthFailureCode:
    assert isinstance(result, AuthFailure), result
    return result.code


def test_missing_garbage_and_foreign_signatures_are_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    unknown_kid = verifier(keys={"a": KEY.public_key(), "b": other.public_key()})

    assert code_of(verifier().verify(None, now=NOW)) is AuthFailureCode.MISSING
    assert code_of(verifier().verify("not-a-jwt", now=NOW)) is AuthFailureCode.MALFORMED
    assert code_of(verifier().verify(token(key=other), now=NOW)) is AuthFailureCode.BAD_SIGNATURE
    assert code_of(unknown_kid.verify(token(key=other), now=NOW)) is AuthFailureCode.BAD_SIGNATURE


def test_a_token_of_another_algorithm_is_refused_even_with_the_key_as_secret() -> None:
    # The classic confusion attack: HS256 signed with the public key's bytes (built by
    # hand: PyJWT itself refuses to sign with a PEM as secret).
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    claims = {"sub": str(USER), "exp": int(NOW.timestamp()) + 60}
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    secret = public_pem(KEY.public_key()).encode()
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + b64(mac)).decode()

    assert code_of(verifier().verify(forged, now=NOW)) is AuthFailureCode.BAD_SIGNATURE


def test_expiry_and_not_before_honour_the_leeway() -> None:
    expired = token(ttl=60)

    assert isinstance(verifier().verify(expired, now=NOW + timedelta(seconds=85)), Principal)
    assert code_of(verifier().verify(expired, now=NOW + timedelta(seconds=91))) is (
        AuthFailureCode.EXPIRED
    )
    assert code_of(verifier().verify(token(ttl=-1), now=NOW + timedelta(seconds=40))) is (
        AuthFailureCode.EXPIRED
    )


def test_exp_is_required() -> None:
    no_exp = jwt.encode({"sub": str(USER)}, KEY, algorithm="EdDSA")

    assert code_of(verifier().verify(no_exp, now=NOW)) is AuthFailureCode.MALFORMED


def test_issuer_audience_and_subject_are_checked() -> None:
    strict = verifier(issuer="idp", audience="aipx")

    assert isinstance(strict.verify(token(issuer="idp", audience="aipx"), now=NOW), Principal)
    assert code_of(strict.verify(token(issuer="evil", audience="aipx"), now=NOW)) is (
        AuthFailureCode.WRONG_ISSUER
    )
    assert code_of(strict.verify(token(issuer="idp", audience="other"), now=NOW)) is (
        AuthFailureCode.WRONG_AUDIENCE
    )
    bad_sub = jwt.encode({"sub": "alice", "exp": int(NOW.timestamp()) + 60}, KEY, "EdDSA")
    assert code_of(verifier().verify(bad_sub, now=NOW)) is AuthFailureCode.BAD_SUBJECT


def test_hs256_and_rs256_verify_with_their_keys() -> None:
    secret = b"s" * 32
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    hs = TokenVerifier(algorithm="HS256", keys=secret)
    rs = TokenVerifier(algorithm="RS256", keys={key_id(rsa_key.public_key()): rsa_key.public_key()})

    hs_token = issue_token(
        user_id=USER, operator=False, key=secret, algorithm="HS256", now=NOW, ttl_s=60
    )
    rs_token = issue_token(
        user_id=USER, operator=True, key=rsa_key, algorithm="RS256", now=NOW, ttl_s=60
    )

    assert hs.verify(hs_token, now=NOW) == Principal(USER, Role.USER)
    assert rs.verify(rs_token, now=NOW) == Principal(USER, Role.OPERATOR)


def test_several_public_keys_are_loaded_for_rotation() -> None:
    second = ed25519.Ed25519PrivateKey.generate()
    text = public_pem(KEY.public_key()) + public_pem(second.public_key())

    keys = load_public_keys(text, what="test")

    assert set(keys) == {key_id(KEY.public_key()), key_id(second.public_key())}


def test_development_uses_generated_keys_and_production_requires_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_DEV_KEY_DIR", str(tmp_path / "keys"))
    dev = load_config(env={})
    prod = load_config(env={"ENVIRONMENT": "staging"})

    signed = issue_token(
        user_id=USER, operator=False, key=dev_signing_key(dev), algorithm="EdDSA", now=NOW, ttl_s=60
    )

    assert token_verifier_from(dev).verify(signed, now=NOW) == Principal(USER, Role.USER)
    assert (tmp_path / "keys" / "jwt-ed25519.pem").stat().st_mode & 0o077 == 0
    assert (
        DevKeys(tmp_path / "keys").jwt_private().public_key() == dev_signing_key(dev).public_key()
    )  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="no key to verify tokens"):
        token_verifier_from(prod)
    with pytest.raises(ConfigError, match="identity provider"):
        dev_signing_key(prod)


def test_a_short_hs256_secret_is_refused() -> None:
    config = load_config(env={"SW__API__AUTH__ALGORITHM": "HS256", "API_JWT_SECRET": "short"})

    with pytest.raises(ConfigError, match="32 bytes"):
        token_verifier_from(config)
