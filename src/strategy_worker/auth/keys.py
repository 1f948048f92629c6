"""Key material for bearer tokens and signed control requests: loading, ids, dev keys.

Production keys come from the environment or from files named in the config (the config
module routes `API_JWT_SECRET`, `API_JWT_PUBLIC_KEY`, `API_CONTROL_SIGNING_KEY` and
`CONTROL_VERIFY_KEY`, each also as `<VAR>_FILE`). In development only, when no key is
configured, both the API and `strategy-worker token` use a key pair generated once in
`.dev-keys/` (or `SW_DEV_KEY_DIR`), so paper mode and a newcomer's first run need no set-up.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, types

from strategy_worker.errors import ConfigError

DEV_KEY_DIR_ENV = "SW_DEV_KEY_DIR"
DEFAULT_DEV_KEY_DIR = Path(".dev-keys")
#: Development key files (private PEM, mode 0600) inside the dev key directory.
DEV_JWT_KEY = "jwt-ed25519.pem"
DEV_CONTROL_KEY = "control-ed25519.pem"

_PEM_BLOCK = re.compile(r"-----BEGIN (?P<kind>[A-Z ]+)-----.+?-----END (?P=kind)-----", re.DOTALL)

PublicKey = types.PublicKeyTypes
PrivateKey = types.PrivateKeyTypes


def key_id(public_key: PublicKey) -> str:
    """A stable id of a public key (SHA-256 of its DER form, 16 hex): the JWS `kid`.

    Derived from the key itself, so rotating keys needs no id to configure: a verifier
    holding several public keys picks the one the signer names.
    """
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def load_public_keys(pem_text: str, *, what: str) -> dict[str, PublicKey]:
    """Every public key in `pem_text` (several PEM blocks allowed: rotation), by key id.

    A private key block is accepted and reduced to its public half (development).
    """
    keys: dict[str, PublicKey] = {}
    for match in _PEM_BLOCK.finditer(pem_text):
        block = match.group(0).encode()
        try:
            if "PRIVATE" in match.group("kind"):
                public = serialization.load_pem_private_key(block, password=None).public_key()
            else:
                public = serialization.load_pem_public_key(block)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{what}: not a usable PEM key ({exc.__class__.__name__})") from None
        keys[key_id(public)] = public
    if not keys:
        raise ConfigError(f"{what}: no PEM key found")
    return keys


def load_private_key(pem_text: str, *, what: str) -> PrivateKey:
    """The one private key in `pem_text` (unencrypted PEM)."""
    try:
        return serialization.load_pem_private_key(pem_text.strip().encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{what}: not an unencrypted PEM private key ({exc.__class__.__name__})"
        ) from None


def read_key_file(path: Path, *, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.__class__.__name__}") from None


def public_pem(public_key: PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def private_pem(private_key: PrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True, slots=True)
class DevKeys:
    """The development key pairs (Ed25519), created on first use; never for production."""

    directory: Path

    @classmethod
    def default(cls) -> DevKeys:
        return cls(Path(os.environ.get(DEV_KEY_DIR_ENV) or DEFAULT_DEV_KEY_DIR))

    def jwt_private(self) -> ed25519.Ed25519PrivateKey:
        return self._load_or_create(DEV_JWT_KEY)

    def control_private(self) -> ed25519.Ed25519PrivateKey:
        return self._load_or_create(DEV_CONTROL_KEY)

    def _load_or_create(self, name: str) -> ed25519.Ed25519PrivateKey:
        path = self.directory / name
        if path.exists():
            key = load_private_key(read_key_file(path, what=str(path)), what=str(path))
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ConfigError(f"{path}: the development key must be Ed25519")
            return key
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ed25519.Ed25519PrivateKey.generate()
        # O_EXCL: two processes creating the same key at once keep the first one's.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._load_or_create(name)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(private_pem(key))
        return key
