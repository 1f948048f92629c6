"""Redis from Debian's packages: a daemonized, non-persistent server on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

from dev.harness.common import (
    SERVICES,
    StepFailed,
    pick_port,
    pid_alive,
    read_from,
    read_pid,
    rel,
    run,
    step,
    terminate,
)

HOME = SERVICES / "redis"
CONFIG = """# scripts/services.sh: throwaway Redis for tests (loopback only, nothing saved to disk)
bind 127.0.0.1
port {port}
protected-mode yes
daemonize yes
pidfile "{home}/redis.pid"
logfile "{home}/redis.log"
dir "{home}/data"
save ""
appendonly no
"""


def find_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None


def missing_packages() -> list[str]:
    return [] if find_server() else ["redis-server"]


def ping(port: int, timeout: float = 1.0) -> bool:
    """RESP PING over a raw socket: true when the server answers +PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def pid(entry: dict[str, Any]) -> int | None:
    return read_pid(Path(entry["home"]) / "redis.pid")


def running(entry: dict[str, Any]) -> bool:
    found = pid(entry)
    return found is not None and pid_alive(found) and ping(int(entry["port"]))


def start_fresh(entry: dict[str, Any], taken: set[int]) -> None:
    server = find_server()
    if server is None:
        raise StepFailed("redis-server not found (Debian package: redis-server)")
    entry.update(home=str(HOME), log=str(HOME / "redis.log"), server=server)
    stop(entry)  # a leftover server from a lost state file
    wipe(entry)
    (HOME / "data").mkdir(parents=True, exist_ok=True)
    port = pick_port("SW_REDIS_PORT", taken, "redis")
    entry.update(port=port, url=f"redis://127.0.0.1:{port}/0")
    (HOME / "redis.conf").write_text(CONFIG.format(port=port, home=HOME))
    start(entry)


def start(entry: dict[str, Any]) -> None:
    home = Path(entry["home"])
    log = Path(entry["log"])
    port = int(entry["port"])
    offset = log.stat().st_size if log.exists() else 0  # judge only this start's lines
    with step(f"redis: start on 127.0.0.1:{port}", log):
        run([entry["server"], str(home / "redis.conf")], timeout=30)
        deadline = time.monotonic() + 15
        while not ping(port):
            text = read_from(log, offset)
            if "Address already in use" in text:
                raise StepFailed(f"port {port} is taken by another process", log)
            if time.monotonic() > deadline:
                raise StepFailed(f"Redis not answering PING in 15 s, see {rel(log)}", log)
            time.sleep(0.1)


def stop(entry: dict[str, Any]) -> None:
    found = pid(entry)
    if found is not None:
        terminate(found, "redis-server", grace=10)


def wipe(entry: dict[str, Any]) -> None:
    home = Path(entry["home"])
    shutil.rmtree(home / "data", ignore_errors=True)
    (home / "redis.pid").unlink(missing_ok=True)
