"""Bearer tokens (JWT) of API callers: verification, and issuing for development.

A token's `sub` is the caller's user id (a UUID); the roles claim (`roles` by default, a
string or a list) holding the operator role makes the caller an operator, who sees and
steers every execution. `exp` is required. Verification is a pure function of the token,
the key and `now` (no wall clock), so it is tested without waiting for time to pass.

Why a public key by default (EdDSA; RS256/ES256 accepted): the platform's identity
provider signs user tokens and the API only verifies them, so a compromised API host holds
nothing that mints tokens, and keys rotate by publishing a new public key (several PEM
blocks may be configured at once; the token's `kid` picks one). HS256 is supported for a
single-team set-up where issuer and API share `API_JWT_SECRET`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

from strategy_worker.auth.keys import (
    DevKeys,
    PrivateKey,
    PublicKey,
    key_id,
    load_private_key,
    load_public_keys,
    read_key_file,
)
from strategy_worker.config import WorkerConfig, is_development
from strategy_worker.errors import ConfigError


class Role(StrEnum):
    USER = "user"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller."""

    user_id: uuid.UUID
    role: Role

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def may_see(self, owner: uuid.UUID) -> bool:
        """Owners see their executions; operators see all."""
        return self.is_operator or owner == self.user_id


class AuthFailureCode(StrEnum):
    MISSING = "missing_token"
    MALFORMED = "malformed_token"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    BAD_SUBJECT = "bad_subject"


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a token was refused (the API answers 401 with the code, never the token)."""

    code: AuthFailureCode
    detail: str


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Verifies callers' JWTs against one algorithm and its key(s)."""

    algorithm: str
    #: Public keys by key id (asymmetric algorithms), or the HS256 secret.
    keys: Mapping[str, PublicKey] | bytes
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"
    operator_role: str = "operator"
    leeway: float = 30.0

    def verify(self, token: str | None, *, now: datetime) -> Principal | AuthFailure:
        """The caller, or why not, at the instant `now` (timezone-aware)."""
        if not token:
            return AuthFailure(AuthFailureCode.MISSING, "a bearer token is required")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return AuthFailure(AuthFailureCode.MALFORMED, "not a JWT")
        if header.get("alg") != self.algorithm:
            return AuthFailure(AuthFailureCode.BAD_SIGNATURE, f"algorithm must be {self.algorithm}")
        key = self._key_for(header.get("kid"))
        if key is None:
            return AuthFailure(AuthFailureCode.BAD_SIGNATURE, "unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError:
            return AuthFailure(AuthFailureCode.BAD_SIGNATURE, "signature does not verify")
        except jwt.PyJWTError:
            return AuthFailure(AuthFailureCode.MALFORMED, "token cannot be decoded")
        return self._check_claims(claims, now.timestamp())

    def _key_for(self, kid: object) -> PublicKey | bytes | None:
        if isinstance(self.keys, bytes):
            return self.keys
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        if len(self.keys) == 1:  # a token without kid, one key configured
            return next(iter(self.keys.values()))
        return None

    def _check_claims(self, claims: Mapping[str, Any], now: float) -> Principal | AuthFailure:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return AuthFailure(AuthFailureCode.MALFORMED, "exp is required")
        if now > exp + self.leeway:
            return AuthFailure(AuthFailureCode.EXPIRED, "token expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now + self.leeway < nbf:
            return AuthFailure(AuthFailureCode.NOT_YET_VALID, "token not valid yet")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return AuthFailure(AuthFailureCode.WRONG_ISSUER, "unexpected issuer")
        if self.audience is not None:
            aud = claims.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if self.audience not in audiences:
                return AuthFailure(AuthFailureCode.WRONG_AUDIENCE, "unexpected audience")
        sub = claims.get("sub")
        try:
            user_id = uuid.UUID(sub) if isinstance(sub, str) else None
        except ValueError:
            user_id = None
        if user_id is None:
            return AuthFailure(AuthFailureCode.BAD_SUBJECT, "sub must be a user id (UUID)")
        roles = claims.get(self.roles_claim)
        role_list = roles if isinstance(roles, list) else [roles]
        role = Role.OPERATOR if self.operator_role in role_list else Role.USER
        return Principal(user_id=user_id, role=role)


def issue_token(
    *,
    user_id: uuid.UUID,
    operator: bool,
    key: PrivateKey | bytes,
    algorithm: str,
    now: datetime,
    ttl_s: float,
    issuer: str | None = None,
    audience: str | None = None,
    roles_claim: str = "roles",
    operator_role: str = "operator",
) -> str:
    """A token as an identity provider would issue it (development, tests, the CLI)."""
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp() + ttl_s),
        roles_claim: [operator_role] if operator else [],
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    headers = None
    if not isinstance(key, bytes):
        headers = {"kid": key_id(key.public_key())}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- from config


def token_verifier_from(config: WorkerConfig) -> TokenVerifier:
    """The API's verifier: HS256 with API_JWT_SECRET, else the public key(s) from
    API_JWT_PUBLIC_KEY / `api.auth.public_key_file`, else (development only) the
    development key pair; ConfigError when nothing is configured."""
    auth = config.api.auth
    common: dict[str, Any] = {
        "algorithm": auth.algorithm,
        "issuer": auth.issuer,
        "audience": auth.audience,
        "roles_claim": auth.roles_claim,
        "operator_role": auth.operator_role,
        "leeway": auth.leeway,
    }
    if auth.algorithm == "HS256":
        if auth.secret is None:
            raise ConfigError("api.auth: HS256 needs API_JWT_SECRET (or API_JWT_SECRET_FILE)")
        secret = auth.secret.get_secret_value().encode()
        if len(secret) < 32:
            raise ConfigError("API_JWT_SECRET: at least 32 bytes for HS256")
        return TokenVerifier(keys=secret, **common)
    if auth.public_key:
        keys = load_public_keys(auth.public_key, what="API_JWT_PUBLIC_KEY")
    elif auth.public_key_file is not None:
        path = auth.public_key_file
        keys = load_public_keys(read_key_file(path, what=str(path)), what=str(path))
    elif is_development(config.environment) and auth.algorithm == "EdDSA":
        public = DevKeys.default().jwt_private().public_key()
        keys = {key_id(public): public}
    else:
        raise ConfigError(
            "api.auth: no key to verify tokens (API_JWT_PUBLIC_KEY or api.auth.public_key_file)"
        )
    return TokenVerifier(keys=keys, **common)


def dev_signing_key(config: WorkerConfig, key_file: Path | None = None) -> PrivateKey | bytes:
    """The key `strategy-worker token` signs with: `key_file` (a private PEM), the HS256
    secret, or the development key (development only)."""
    auth = config.api.auth
    if key_file is not None:
        return load_private_key(read_key_file(key_file, what=str(key_file)), what=str(key_file))
    if auth.algorithm == "HS256":
        if auth.secret is None:
            raise ConfigError("HS256 needs API_JWT_SECRET")
        return auth.secret.get_secret_value().encode()
    if is_development(config.environment) and auth.algorithm == "EdDSA":
        return DevKeys.default().jwt_private()
    raise ConfigError(
        "outside development, tokens come from the identity provider; "
        "pass --key-file PRIVATE.pem to sign one anyway"
    )
