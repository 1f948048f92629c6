"""Shared plumbing of the service harness: steps with timing, commands, ports, apt, state, lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / ".services"
ENV_FILE = SERVICES / "env"
STATE_FILE = SERVICES / "state.json"
LOCK_FILE = SERVICES / ".lock"
KAFKA_DEV = ROOT / "dev" / "kafka"

SERVICE_NAMES = ("postgres", "redis", "kafka")
URL_VARS = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "kafka": "KAFKA_BOOTSTRAP_SERVERS"}
DB_NAME = "strategy_worker"
DB_USER = "strategy_worker"
# The spec's topics; 3 partitions where strategies are keyed and consumed in parallel.
TOPICS = {
    "strategy.approved": 3,
    "strategy.execution": 3,
    "strategy.control": 1,
    "strategy.approved.dlq": 1,
}
KAFKA_STARTED = "Kafka Server started"
# Ports are picked below the kernel's ephemeral range, so an outgoing connection of some other
# process cannot grab the port between our choice and the server's bind.
PORT_RANGE = (20000, 32000)


class StepFailed(Exception):
    """A harness step failed; the message names the step, the cause and where the log is."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def say(message: str) -> None:
    sys.stderr.write(f"services: {message}\n")
    sys.stderr.flush()


def rel(path: Path) -> str:
    """A path relative to the repository when it is inside it (shorter, copy-pasteable messages)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def read_from(path: Path, offset: int) -> str:
    """The text a log gained after byte ``offset`` ("" when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def step(name: str, log: Path | None = None) -> Iterator[None]:
    """Time one step and name it in any failure raised inside."""
    started = time.monotonic()
    say(f"{name} ...")
    try:
        yield
    except StepFailed as exc:
        raise StepFailed(f"step '{name}' failed: {exc}", exc.log or log) from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise StepFailed(f"step '{name}' failed: {exc}", log) from exc
    say(f"{name} done in {time.monotonic() - started:.1f} s")


def run(
    cmd: Sequence[str],
    *,
    user: str | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> str:
    """Run a command (as ``user`` when given); raise StepFailed with its output when it fails."""
    argv = ["runuser", "-u", user, "--", *cmd] if user else list(cmd)
    proc = subprocess.run(  # noqa: S603 - argv built here from fixed tool names and our own paths
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise StepFailed(f"`{shlex.join(argv)}` exited with {proc.returncode}: {output}", log)
    return proc.stdout


def mask(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# --------------------------------------------------------------------------- processes and ports


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap our own child if it already exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def terminate(pid: int, marker: str, grace: float) -> None:
    """SIGTERM a process we started (its command line must contain ``marker``), then SIGKILL."""
    if not pid_alive(pid) or marker not in cmdline(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    say(f"pid {pid} ignored SIGTERM for {grace:.0f} s; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.1)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def pick_port(setting: str, taken: set[int], what: str) -> int:
    """A free loopback port for ``what``, or the one env ``setting`` names (must be free)."""
    wanted = os.environ.get(setting) if setting else None
    if wanted:
        port = int(wanted)
        if not port_free(port):
            raise StepFailed(f"{what}: port {port} (from {setting}) is taken by another process")
        return port
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        if port not in taken and port_free(port):
            taken.add(port)
            return port
    raise StepFailed(f"{what}: no free port found in {PORT_RANGE} on 127.0.0.1")


# --------------------------------------------------------------------------- packages


class Apt:
    """Installs missing Debian packages, running `apt-get update` once and only when needed."""

    def __init__(self) -> None:
        self.updated = False

    def install(self, packages: list[str], why: str) -> None:
        if not packages:
            return
        prefix: list[str] = []
        if os.geteuid() != 0:
            sudo = shutil.which("sudo")
            ok = sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, check=False)  # noqa: S603
            if not ok or ok.returncode != 0:
                raise StepFailed(
                    f"{why}: package(s) {' '.join(packages)} missing and this is not root; "
                    f"install them: sudo apt-get install -y {' '.join(packages)}"
                )
            prefix = [str(sudo), "-n"]
        if shutil.which("apt-get") is None:
            raise StepFailed(f"{why}: package(s) {' '.join(packages)} missing and no apt-get here")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        log = SERVICES / "apt.log"
        # Keep package scripts from starting their own daemons (a Redis on 6379, PostgreSQL's
        # "main" cluster on 5432): the harness runs its own, and the machine has 2 cores.
        policy = Path("/usr/sbin/policy-rc.d")
        own_policy = os.geteuid() == 0 and not policy.exists()
        if own_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            if not self.updated:
                with step("apt-get update", log):
                    run([*prefix, "apt-get", "update", "-q"], env=env, log=log, timeout=600)
                self.updated = True
            with step(f"apt-get install {' '.join(packages)}", log):
                cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
                run([*prefix, *cmd], env=env, log=log, timeout=900)
        finally:
            if own_policy:
                policy.unlink(missing_ok=True)


def find_pg_bin() -> Path | None:
    override = os.environ.get("SW_PG_BIN")
    if override:
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def java_major(java: str) -> int:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str | None:
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(str(shutil.which("java")))
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    for java in candidates:
        if Path(java).exists() and java_major(java) >= 17:
            return java
    return None


# --------------------------------------------------------------------------- state


def load_state() -> dict[str, Any]:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state: dict[str, Any]) -> None:
    SERVICES.mkdir(exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.chmod(0o600)  # holds database passwords
    tmp.replace(STATE_FILE)


@contextlib.contextmanager
def locked(timeout: float = 900) -> Iterator[None]:
    """One harness command at a time per checkout (several sessions may call `up` together)."""
    SERVICES.mkdir(exist_ok=True)
    with LOCK_FILE.open("a+") as fh:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    say("waiting for another scripts/services.sh command in this checkout ...")
                    waited = True
                if time.monotonic() > deadline:
                    raise StepFailed(
                        f"another services.sh held {rel(LOCK_FILE)} for {timeout:.0f} s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def external_urls() -> dict[str, str]:
    """Servers given by the caller's environment, ignoring values sourced from our own env file."""
    if os.environ.get("SW_SERVICES_DIR") == str(SERVICES):
        return {}
    return {name: os.environ[var] for name, var in URL_VARS.items() if os.environ.get(var)}
