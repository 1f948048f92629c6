"""Where the harness's settings live and how tests stop/start its PostgreSQL.

Plain helpers (not fixtures) so tests can import them: `from ..servers import PostgresControl`.
"""

from __future__ import annotations

import asyncio
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
    """Stops and starts the harness's PostgreSQL mid-test (same port, same data) for fault tests.

    Each call runs `scripts/services.sh stop|start|restart postgres` and returns when it is done:
    `stop` is a fast shutdown (open transactions roll back, every connection drops); `start`
    returns once the server accepts connections. In async tests use the `a`-prefixed methods so
    the code under test keeps running while the server is down.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.pid_file = Path(env["PG_PID_FILE"])

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, None while it is stopped."""
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _argv(self, action: str) -> list[str]:
        return ["bash", str(SERVICES_SH), action, "postgres"]

    def _check(self, action: str, code: int, output: bytes) -> None:
        assert code == 0, f"services.sh {action} postgres exited {code}:\n{output.decode()}"

    def _run(self, action: str) -> None:
        proc = subprocess.run(
            self._argv(action), env=self.env, capture_output=True, check=False, timeout=120
        )
        self._check(action, proc.returncode, proc.stdout + proc.stderr)

    async def _arun(self, action: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(action),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 120)
        self._check(action, proc.returncode or 0, output)

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")

    def restart(self) -> None:
        self._run("restart")

    async def astop(self) -> None:
        await self._arun("stop")

    async def astart(self) -> None:
        await self._arun("start")

    async def arestart(self) -> None:
        await self._arun("restart")
