"""The PostgreSQL adapter's one frozen config (the `database:` section of config.yaml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class DatabaseConfig(BaseModel):
    """Where the database is and how the pool behaves.

    `url` (DATABASE_URL) wins over host/port/name/user/password when set; the password
    comes from DB_PASSWORD (or the file named by DB_PASSWORD_FILE), never from YAML.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr | None = None
    """A full postgresql:// DSN; may carry sslmode and friends as query parameters."""
    host: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535)
    name: str = "aipx"
    user: str = "postgres"
    password: SecretStr | None = None
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    command_timeout: float = Field(default=10.0, gt=0)
    """Seconds a single statement may take before it fails (retryable)."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds one connection attempt may take."""
    connect_attempts: int = Field(default=6, ge=1)
    """Startup attempts before giving up with a one-line error."""
    connect_backoff: float = Field(default=0.5, gt=0)
    """Delay before the second attempt; doubles each time (with jitter) up to the cap."""
    connect_backoff_max: float = Field(default=8.0, gt=0)
    sslmode: SslMode = "prefer"
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    """Client certificate (with `sslkey`) for mutual TLS."""
    sslkey: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("database.pool_min_size must not exceed database.pool_max_size")
        if (self.sslcert is None) != (self.sslkey is None):
            raise ValueError("database.sslcert and database.sslkey go together")
        if self.url is not None:
            scheme = urlsplit(self.url.get_secret_value()).scheme
            if scheme not in ("postgresql", "postgres"):
                raise ValueError("database.url must start with postgresql://")
        return self

    @classmethod
    def from_env(
        cls, values: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> DatabaseConfig:
        """Build from the YAML section plus DATABASE_URL, DB_PASSWORD and DB_PASSWORD_FILE."""
        env = os.environ if environ is None else environ
        data = dict(values or {})
        if env.get("DATABASE_URL"):
            data["url"] = env["DATABASE_URL"]
        if env.get("DB_PASSWORD"):
            data["password"] = env["DB_PASSWORD"]
        elif env.get("DB_PASSWORD_FILE"):
            secret = Path(env["DB_PASSWORD_FILE"]).read_text(encoding="utf-8")
            data["password"] = secret.rstrip("\r\n")
        return cls.model_validate(data)

    def dsn(self) -> str:
        """The DSN to connect with (contains the password: never log it). A DATABASE_URL
        without a password takes DB_PASSWORD's; an explicit non-default sslmode is added."""
        if self.url is not None:
            return self._url_dsn(self.url.get_secret_value())
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password.get_secret_value(), safe="")
        query: dict[str, str] = {"sslmode": self.sslmode}
        for key in ("sslrootcert", "sslcert", "sslkey"):
            path = getattr(self, key)
            if path is not None:
                query[key] = str(path)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"postgresql://{auth}@{host}:{self.port}/{quote(self.name, safe='')}?{urlencode(query)}"
        )

    def _url_dsn(self, url: str) -> str:
        parts = urlsplit(url)
        netloc = parts.netloc
        if self.password is not None and parts.password is None and "@" in netloc:
            user, host = netloc.rsplit("@", 1)
            secret = quote(self.password.get_secret_value(), safe="")
            netloc = f"{user}:{secret}@{host}"
        query = parts.query
        # "prefer" is libpq's and asyncpg's own default: only an explicit choice is added.
        if "sslmode=" not in query and self.sslmode != "prefer":
            query = f"{query}&sslmode={self.sslmode}" if query else f"sslmode={self.sslmode}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def where(self) -> str:
        """host:port for messages (no secrets)."""
        return describe_dsn(self.dsn())

    def setting_hint(self) -> str:
        """The setting an operator should fix when the database cannot be reached."""
        if self.url is not None:
            return "DATABASE_URL (database.url)"
        return "database.host/database.port (or DATABASE_URL)"


def describe_dsn(dsn: str) -> str:
    """host:port of a postgresql:// DSN, for error messages; never includes credentials.

    A Unix-socket DSN (`?host=/run/postgresql`) is described by its socket directory.
    """
    try:
        parts = urlsplit(dsn)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<unparsable DSN>"
    query = parse_qs(parts.query)
    if not host and query.get("host"):
        host = query["host"][0]
    if port is None and query.get("port"):
        port_text = query["port"][0]
        port = int(port_text) if port_text.isdigit() else None
    return f"{host or 'localhost'}:{port or 5432}"
