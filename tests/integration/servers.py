"""Where the harness's settings live and how tests stop/start its PostgreSQL.

Plain helpers (not fixtures) so tests can import them: `from ..servers import PostgresControl`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = ROOT / ".services"
ENV_FILE = SERVICES_DIR / "env"
SERVICES_SH = ROOT / "scripts" / "services.sh"
HOW_TO = "start the servers with `scripts/services.sh up` (or export {var} for your own server)"


def read_env_file(path: Path) -> dict[str, str]:
    """The `export KEY=VALUE` lines of a .services/env file (shell-quoted values)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            values[key] = value
    return values


def started_here() -> dict[str, str]:
    """Settings of servers this checkout's harness started ({} when none or all were given).

    Only those can be stopped and started by PostgresControl: `services.sh` acts on its own.
    """
    values = read_env_file(ENV_FILE) if ENV_FILE.exists() else {}
    return values if values.get("PG_PID_FILE") else {}


def load_services_env() -> tuple[dict[str, str], str]:
    """The harness settings and where they came from.

    The environment wins, except when it was sourced from our own .services/env (its
    SW_SERVICES_DIR names this checkout): then the file is fresher, e.g. after a new `up`.
    """
    from_file = read_env_file(ENV_FILE) if ENV_FILE.exists() else {}
    from_env = dict(os.environ)
    if from_file and from_env.get("SW_SERVICES_DIR") == str(SERVICES_DIR):
        return {**from_env, **from_file}, str(ENV_FILE)
    if from_file:
        return {**from_file, **from_env}, f"the environment, then {ENV_FILE}"
    return from_env, "the environment (no .services/env)"


class PostgresControl:
    """A private PostgreSQL for fault tests: stop, start or restart it mid-test at will.

    It is an extra cluster (`scripts/services.sh instance up NAME`), not the shared test server,
    so stopping it never disturbs other tests or sessions using DATABASE_URL. Same port and data
    across restarts. `stop` is a fast shutdown (open transactions roll back, every connection
    drops); `start` returns once it accepts connections. In async tests use the `a`-methods so
    the code under test keeps running while the server is down.
    """

    def __init__(self, name: str, info: Mapping[str, object]) -> None:
        self.name = name
        self.url = str(
            info["url"]
        )  # postgresql://strategy_worker:...@127.0.0.1:PORT/strategy_worker
        self.admin_url = str(info["admin_url"])  # superuser over the unix socket
        self.port = int(str(info["port"]))
        self.pid_file = Path(str(info["pid_file"]))
        self.log = Path(str(info["log"]))

    @classmethod
    def up(cls, name: str) -> PostgresControl:
        """Start (or reuse) the instance NAME."""
        output = _services("instance", "up", name)
        return cls(name, json.loads(output.strip().splitlines()[-1]))

    def down(self) -> None:
        """Stop the instance and delete its data."""
        _services("instance", "down", self.name)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, None while it is stopped."""
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        _services("instance", "stop", self.name)

    def start(self) -> None:
        _services("instance", "start", self.name)

    def restart(self) -> None:
        _services("instance", "restart", self.name)

    async def astop(self) -> None:
        await _aservices("instance", "stop", self.name)

    async def astart(self) -> None:
        await _aservices("instance", "start", self.name)

    async def arestart(self) -> None:
        await _aservices("instance", "restart", self.name)


class SharedKafka:
    """The harness's own Kafka broker, stopped and started in place (same port and data).

    Unlike PostgreSQL there is no private broker: a test that stops it must start it again
    (the `kafka_control` fixture does, whatever happens) before other tests need it.
    """

    async def astop(self) -> None:
        await _aservices("stop", "kafka")

    async def astart(self) -> None:
        """Returns once the broker answers metadata requests again."""
        await _aservices("start", "kafka")

    @staticmethod
    def managed_here() -> bool:
        """True when this checkout's harness started the broker (so it may stop it)."""
        values = read_env_file(ENV_FILE) if ENV_FILE.exists() else {}
        return bool(values.get("KAFKA_PID_FILE"))

    @staticmethod
    def running() -> bool:
        values = read_env_file(ENV_FILE) if ENV_FILE.exists() else {}
        try:
            os.kill(int(Path(values["KAFKA_PID_FILE"]).read_text().split()[0]), 0)
        except (KeyError, OSError, ValueError, IndexError):
            return False
        return True


def _services(*args: str) -> str:
    """Run scripts/services.sh ARGS; its stdout, or an AssertionError with all its output."""
    proc = subprocess.run(
        ["bash", str(SERVICES_SH), *args], capture_output=True, text=True, check=False, timeout=180
    )
    assert proc.returncode == 0, (
        f"services.sh {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}"
    )
    return proc.stdout


async def _aservices(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(SERVICES_SH),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, (
        f"services.sh {' '.join(args)}: exit {proc.returncode}\n{err.decode()}"
    )
    return out.decode()
