"""Verifiable identity of `strategy.control` requests: the API signs, the worker verifies.

Why: the worker used to trust the `user_id` in the message body, and every event publishes
that `user_id`, so anyone able to write to `strategy.control` could stop any execution.

How: the API signs each request it publishes with its own Ed25519 key (`ControlSigner`):
a compact JWS in the message's `control_token` field whose claims bind the request id,
the target (execution or strategy id), the action, the user (`sub`) and the user's role, with
an expiry. The worker verifies it with the public half (`ControlVerifier.verify`): a token
copied onto another request, another action or another execution does not match; a
replayed request has the same request id, which the worker's idempotency already absorbs.
The caller's own bearer token is not forwarded: it would bind nothing (any action on any of
the user's executions for its lifetime) and readers of the topic could reuse it.

`verify` is pure: the parsed request, `now`, and the Kafka principal when the transport
reports one. It returns who is asking (`ControlIdentity`) or a refusal with a stable code;
`may_control` then says whether that identity may act on an execution it owns or not.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

from strategy_worker.auth.keys import (
    DevKeys,
    PublicKey,
    key_id,
    load_private_key,
    load_public_keys,
    read_key_file,
)
from strategy_worker.auth.tokens import Role
from strategy_worker.config import WorkerConfig, is_development
from strategy_worker.errors import ConfigError
from strategy_worker.messages.control import ControlAction, ControlRequest

CONTROL_ISSUER = "strategy-worker-api"
CONTROL_TOKEN_TYPE = "sw-control+jwt"  # noqa: S105 - a JWS typ header, not a secret
_ALGORITHM = "EdDSA"


class RefusalCode(StrEnum):
    """Why a control request's identity was refused (the worker records it)."""

    UNSIGNED = "unsigned"
    MALFORMED = "malformed_token"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    MISMATCH = "token_mismatch"


@dataclass(frozen=True, slots=True)
class ControlIdentity:
    """Who is asking: verified by a token, trusted by its Kafka principal, or (only where
    signatures are not required) the unverified `user_id` of the body."""

    user_id: uuid.UUID
    role: Role
    via: Literal["token", "principal", "unsigned"]


@dataclass(frozen=True, slots=True)
class ControlRefusal:
    code: RefusalCode
    detail: str


def control_claims(request: ControlRequest) -> dict[str, Any]:
    """The request fields a control token binds (besides iss/iat/exp/role)."""
    return {
        "sub": str(request.user_id),
        "rid": str(request.request_id),
        "act": str(request.action),
        "eid": str(request.execution_id) if request.execution_id else None,
        "sid": str(request.strategy_id) if request.strategy_id else None,
    }


def may_control(identity: ControlIdentity, owner_user_id: uuid.UUID) -> bool:
    """An operator may control any execution; anyone else only their own."""
    return identity.role is Role.OPERATOR or identity.user_id == owner_user_id


class ControlSigner:
    """The API's side: signs the requests it publishes."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey, *, ttl_s: float) -> None:
        self._key = private_key
        self._kid = key_id(private_key.public_key())
        self._ttl_s = ttl_s

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, request: ControlRequest, *, role: Role, now: datetime) -> ControlRequest:
        """`request` with its `control_token` (any token it had is replaced)."""
        issued = int(now.timestamp())
        claims = {
            **control_claims(request),
            "iss": CONTROL_ISSUER,
            "role": str(role),
            "iat": issued,
            "exp": issued + int(self._ttl_s),
        }
        token = jwt.encode(
            claims,
            self._key,
            algorithm=_ALGORITHM,
            headers={"kid": self._kid, "typ": CONTROL_TOKEN_TYPE},
        )
        return replace(request, control_token=token)


@dataclass(frozen=True, slots=True)
class ControlVerifier:
    """The worker's side: who sent a control request, or why it is refused."""

    #: Public keys of the API's signing key(s), by key id (rotation: several).
    keys: Mapping[str, PublicKey]
    require_signed: bool
    trusted_principals: frozenset[str] = frozenset()
    #: Clock skew tolerated on iat/exp.
    leeway_s: float = 30.0

    def verify(
        self,
        request: ControlRequest,
        *,
        now: datetime,
        kafka_principal: str | None = None,
    ) -> ControlIdentity | ControlRefusal:
        """A present token is always checked, and a bad one always refused, whatever
        `require_signed` says: it is either tampering or a bug. Without a token, a trusted
        Kafka principal vouches for the body's user; otherwise the request is refused when
        signatures are required, and taken at its word (today's behaviour) when not."""
        if request.control_token is not None and self.keys:
            return self._verify_token(request, request.control_token, now)
        if kafka_principal is not None and kafka_principal in self.trusted_principals:
            return ControlIdentity(request.user_id, Role.USER, "principal")
        if self.require_signed:
            return ControlRefusal(
                RefusalCode.UNSIGNED, "unsigned control requests are refused (require_signed)"
            )
        return ControlIdentity(request.user_id, Role.USER, "unsigned")

    def _verify_token(
        self, request: ControlRequest, token: str, now: datetime
    ) -> ControlIdentity | ControlRefusal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return ControlRefusal(RefusalCode.MALFORMED, "control_token is not a JWS")
        if header.get("alg") != _ALGORITHM or header.get("typ") != CONTROL_TOKEN_TYPE:
            return ControlRefusal(RefusalCode.MALFORMED, "not a control token")
        key = self.keys.get(str(header.get("kid")))
        if key is None:
            return ControlRefusal(RefusalCode.UNKNOWN_KEY, "signed by a key not configured")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=[_ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            return ControlRefusal(RefusalCode.BAD_SIGNATURE, "signature does not verify")
        except jwt.PyJWTError:
            return ControlRefusal(RefusalCode.MALFORMED, "control_token cannot be decoded")
        if claims.get("iss") != CONTROL_ISSUER:
            return ControlRefusal(RefusalCode.WRONG_ISSUER, "not issued by the API")
        at = now.timestamp()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return ControlRefusal(RefusalCode.MALFORMED, "iat and exp are required")
        if at > exp + self.leeway_s:
            return ControlRefusal(RefusalCode.EXPIRED, "control token expired")
        if at + self.leeway_s < iat:
            return ControlRefusal(RefusalCode.NOT_YET_VALID, "control token issued in the future")
        for name, value in control_claims(request).items():
            if claims.get(name) != value:
                return ControlRefusal(RefusalCode.MISMATCH, f"token does not bind this {name}")
        try:
            role = Role(str(claims.get("role")))
        except ValueError:
            return ControlRefusal(RefusalCode.MALFORMED, "unknown role")
        return ControlIdentity(request.user_id, role, "token")


# --------------------------------------------------------------------------- from config


def control_verifier_from(config: WorkerConfig) -> ControlVerifier:
    """The verifier the worker's control desk uses; ConfigError when signatures are
    required and no key is configured (a worker that could never accept a request)."""
    section = config.control_auth
    keys: dict[str, PublicKey] = {}
    if section.verify_key:
        keys = load_public_keys(section.verify_key, what="CONTROL_VERIFY_KEY")
    elif section.verify_key_file is not None:
        path = section.verify_key_file
        keys = load_public_keys(read_key_file(path, what=str(path)), what=str(path))
    elif is_development(config.environment):
        public = DevKeys.default().control_private().public_key()
        keys = {key_id(public): public}
    required = config.require_signed_control
    if required and not keys:
        raise ConfigError(
            "control_auth: require_signed is on but no verify key is configured "
            "(CONTROL_VERIFY_KEY or control_auth.verify_key_file)"
        )
    return ControlVerifier(
        keys=keys,
        require_signed=required,
        trusted_principals=frozenset(section.trusted_principals),
    )


def control_signer_from(config: WorkerConfig) -> ControlSigner | None:
    """The API's signer: its key from API_CONTROL_SIGNING_KEY / the file, the development
    key in development, else None (the API then refuses to publish control requests)."""
    api = config.api
    text: str | None = None
    what = "API_CONTROL_SIGNING_KEY"
    if api.control_signing_key is not None:
        text = api.control_signing_key.get_secret_value()
    elif api.control_signing_key_file is not None:
        what = str(api.control_signing_key_file)
        text = read_key_file(api.control_signing_key_file, what=what)
    if text is None:
        if not is_development(config.environment):
            return None
        return ControlSigner(DevKeys.default().control_private(), ttl_s=api.control_token_ttl)
    key = load_private_key(text, what=what)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{what}: the control signing key must be Ed25519")
    return ControlSigner(key, ttl_s=api.control_token_ttl)


__all__ = [
    "CONTROL_ISSUER",
    "ControlAction",
    "ControlIdentity",
    "ControlRefusal",
    "ControlSigner",
    "ControlVerifier",
    "RefusalCode",
    "control_signer_from",
    "control_verifier_from",
    "may_control",
]
