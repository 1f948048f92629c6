"""Who is calling: API bearer tokens (`tokens`) and signed control requests (`control`).

Pure verification (the token, the key and `now` in, a principal or a refusal out); key
loading and the development keys live in `keys`.
"""

from strategy_worker.auth.control import (
    CONTROL_ISSUER,
    ControlIdentity,
    ControlRefusal,
    ControlSigner,
    ControlVerifier,
    RefusalCode,
    control_signer_from,
    control_verifier_from,
    may_control,
)
from strategy_worker.auth.tokens import (
    AuthFailure,
    AuthFailureCode,
    Principal,
    Role,
    TokenVerifier,
    dev_signing_key,
    issue_token,
    token_verifier_from,
)

__all__ = [
    "CONTROL_ISSUER",
    "AuthFailure",
    "AuthFailureCode",
    "ControlIdentity",
    "ControlRefusal",
    "ControlSigner",
    "ControlVerifier",
    "Principal",
    "RefusalCode",
    "Role",
    "TokenVerifier",
    "control_signer_from",
    "control_verifier_from",
    "dev_signing_key",
    "issue_token",
    "may_control",
    "token_verifier_from",
]
