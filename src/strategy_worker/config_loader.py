"""Loading the worker's configuration (`WorkerConfig`, `config.py`).

Load order: model defaults -> YAML at `CONFIG_PATH` (default ./config/config.yaml) ->
environment, where `strategy-worker run` adds the variables of ./.env below the real
environment (a variable set in both keeps the real value). YAML numbers become `Decimal`
through their text (never through float), unknown keys are errors, and every error is one
line naming where it came from and the key path:
``config.yaml: risk.max_position_size: must be in (0, 1]``.

Secrets (database, Redis and Kafka SASL passwords, API keys) come only from the environment
or from a file named by ``<VAR>_FILE``; a secret in the YAML is refused, so it never lands
in git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pydantic
import yaml

from strategy_worker.config import WorkerConfig
from strategy_worker.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("./config/config.yaml")
DEFAULT_ENV_FILE = Path(".env")
ENV_PREFIX = "SW__"


# Plain environment variables of the spec and the service harness -> key path.
_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "ENVIRONMENT": ("environment",),
    "WORKER_ID": ("worker_id",),
    "DB_PASSWORD": ("database", "password"),
    "DATABASE_URL": ("database", "url"),
    "REDIS_PASSWORD": ("redis", "password"),
    "REDIS_URL": ("redis", "url"),
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "KAFKA_SASL_USERNAME": ("kafka", "sasl", "username"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl", "password"),
    "API_JWT_SECRET": ("api", "auth", "secret"),
    "API_JWT_PUBLIC_KEY": ("api", "auth", "public_key"),
    "API_CONTROL_SIGNING_KEY": ("api", "control_signing_key"),
    "CONTROL_VERIFY_KEY": ("control_auth", "verify_key"),
}
# Secrets may also come from a file named by <VAR>_FILE (container secret mounts).
_SECRET_ENV = (
    "DB_PASSWORD",
    "REDIS_PASSWORD",
    "KAFKA_SASL_PASSWORD",
    "DATABASE_URL",
    "REDIS_URL",
    "API_JWT_SECRET",
    "API_JWT_PUBLIC_KEY",
    "API_CONTROL_SIGNING_KEY",
    "CONTROL_VERIFY_KEY",
)
# Keys that must never be written in the YAML file.
_SECRET_PATHS = frozenset(
    {
        ("database", "password"),
        ("redis", "password"),
        ("kafka", "sasl", "password"),
        ("api", "auth", "secret"),
        ("api", "control_signing_key"),
    }
)


class _DecimalLoader(yaml.SafeLoader):
    """YAML SafeLoader that reads floats as Decimal from their text and rejects duplicate keys."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "").strip()
    lowered = text.lower()
    if lowered in {".nan", ".inf", "+.inf", "-.inf"}:
        return Decimal("NaN")  # validation rejects it with the key's path
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the resolver only matches numbers
        raise yaml.constructor.ConstructorError(None, None, f"bad number {text!r}") from exc


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node)
    return result


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_DecimalLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, *, source: str = "config.yaml") -> dict[str, Any]:
    """Parse config YAML with Decimal numbers; an empty document is an empty mapping."""
    try:
        data = yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1})"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data


def read_env_file(path: Path, *, required: bool = False) -> dict[str, str]:
    """The variables of a .env file (``KEY=value`` lines, python-dotenv's syntax).

    A missing file is empty unless `required`; a key without ``=value`` is left out.
    """
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: env file not found")
        return {}
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc.__class__.__name__}") from None
    return {name: value for name, value in values.items() if value is not None}


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    env_file: Path | None = None,
    env_file_required: bool = False,
) -> WorkerConfig:
    """Build the worker's config: defaults -> YAML -> environment; ConfigError names the key.

    `path` wins over CONFIG_PATH; a missing file is an error only when named explicitly
    (by `path` or CONFIG_PATH), so the defaults alone give a runnable local config.
    With `env_file` (`strategy-worker run` passes ./.env), its variables count as
    environment variables, and a variable set in the real environment wins over it.
    """
    real: Mapping[str, str] = os.environ if env is None else env
    environ = real
    from_file: dict[str, str] = {}
    if env_file is not None:
        from_file = read_env_file(env_file, required=env_file_required)
        environ = {**from_file, **real}
    explicit = path is not None or "CONFIG_PATH" in environ
    config_path = (
        path if path is not None else Path(environ.get("CONFIG_PATH", DEFAULT_CONFIG_PATH))
    )
    source = config_path.name
    data: dict[str, Any] = {}
    if config_path.is_file():
        try:
            text = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path}: cannot read: {exc.__class__.__name__}") from None
        data = parse_yaml(text, source=source)
        for secret in _SECRET_PATHS:
            if _get_path(data, secret) is not None:
                raise ConfigError(
                    f"{source}: {'.'.join(secret)}: secrets come from the environment "
                    "(or a *_FILE), never from the config file"
                )
    elif explicit:
        raise ConfigError(f"{config_path}: config file not found")

    origins: dict[tuple[str, ...], str] = {}
    for key_path, value, origin in _env_overrides(
        environ,
        file_names=frozenset(name for name in from_file if name not in real),
        file_label=env_file.name if env_file is not None else "",
    ):
        _set_path(data, key_path, value, origin)
        origins[key_path] = origin
    try:
        return WorkerConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_one_line(exc, source, origins)) from None


def _env_overrides(
    environ: Mapping[str, str], *, file_names: frozenset[str] = frozenset(), file_label: str = ""
) -> list[tuple[tuple[str, ...], object, str]]:
    """(key path, value, origin) per variable; origin names the .env file for its variables."""

    def where(name: str) -> str:
        return f"{file_label} {name}" if name in file_names else f"env {name}"

    overrides: list[tuple[tuple[str, ...], object, str]] = []
    for name, key_path in _ENV_KEYS.items():
        value: str | None = environ.get(name)
        origin = where(name)
        file_name = environ.get(f"{name}_FILE") if name in _SECRET_ENV else None
        if file_name:
            origin = where(f"{name}_FILE")
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{origin}: cannot read: {exc.__class__.__name__}") from None
        if value is None:
            continue
        if value == "" and name in _SECRET_ENV:
            continue  # the spec's `REDIS_PASSWORD=` means "no password"
        overrides.append((key_path, value, origin))
    # Generic SW__SECTION__KEY[__SUB] overrides come last: they are the most specific.
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key_path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            if any(not part for part in key_path):
                raise ConfigError(f"{where(name)}: malformed variable name")
            overrides.append((key_path, environ[name], where(name)))
    return overrides


def _get_path(data: Mapping[str, Any], key_path: tuple[str, ...]) -> object:
    node: object = data
    for part in key_path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: object, origin: str) -> None:
    node = data
    for depth, part in enumerate(key_path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(key_path[: depth + 1])
            raise ConfigError(f"{origin}: {where}: is not a section")
        node = child
    node[key_path[-1]] = value


_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def _one_line(
    exc: pydantic.ValidationError, source: str, origins: Mapping[tuple[str, ...], str]
) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = tuple(str(part) for part in first["loc"])
    origin = source
    unknown = first["type"] == "extra_forbidden"
    for key_path, env_origin in origins.items():
        # An error under an env-set key came from it; an unknown key may be the env's prefix.
        if loc[: len(key_path)] == key_path or (unknown and key_path[: len(loc)] == loc):
            origin = env_origin
            break
    message = "unknown key" if unknown else first["msg"]
    message = _PYDANTIC_PREFIX.sub("", message)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if not loc:  # a rule across sections: its message names the keys
        return f"{origin}: {message}{more}"
    return f"{origin}: {'.'.join(loc)}: {message}{more}"
