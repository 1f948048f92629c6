"""PostgreSQL from Debian's packages: a throwaway cluster on a free port, owned by `postgres`.

The server refuses to run as root, so when the harness is root every initdb/pg_ctl/psql call runs
as the `postgres` OS user (created by the Debian package) via runuser, in a directory it owns.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from dev.harness.common import (
    DB_NAME,
    DB_USER,
    ROOT,
    SERVICES,
    StepFailed,
    find_pg_bin,
    mask,
    pick_port,
    pid_alive,
    port_answers,
    read_from,
    read_pid,
    rel,
    run,
    say,
    step,
    terminate,
)

# Throwaway cluster: durability traded for speed; enough connections for pools of parallel tests.
SETTINGS = """
# --- scripts/services.sh (throwaway test cluster) ---
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{run_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 64MB
timezone = 'UTC'
log_timezone = 'UTC'
"""


def missing_packages() -> list[str]:
    return [] if find_pg_bin() else ["postgresql"]


def os_user() -> str | None:
    """The OS user the server runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StepFailed(
            "running as root but there is no `postgres` OS user to run the server "
            "(Debian's postgresql package creates it: apt-get install -y postgresql)"
        ) from None
    return "postgres"


def choose_home(user: str | None, name: str) -> Path:
    """.services/NAME, unless `postgres` cannot reach it (a clone under /root, mode 700)."""
    home = SERVICES / name
    if user is None:
        return home
    probe = subprocess.run(  # noqa: S603
        ["runuser", "-u", user, "--", "test", "-x", str(SERVICES)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0:
        return home
    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"strategy-worker-{key}" / name


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def pid(entry: dict[str, Any]) -> int | None:
    return read_pid(Path(entry["data"]) / "postmaster.pid")


def running(entry: dict[str, Any]) -> bool:
    found = pid(entry)
    return found is not None and pid_alive(found) and port_answers(int(entry["port"]))


def start_fresh(entry: dict[str, Any], taken: set[int], name: str = "postgres") -> None:
    """initdb a new cluster, start it, create the app role and database, check the login works.

    ``name`` is the cluster's directory under .services/ (extra instances for fault tests).
    """
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise StepFailed("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    user = os_user()
    SERVICES.mkdir(exist_ok=True)
    home = choose_home(user, name)
    entry.update(
        name=name,
        bin=str(pg_bin),
        user=user,
        home=str(home),
        data=str(home / "data"),
        run=str(home / "run"),
        log=str(home / "postgres.log"),
    )
    stop(entry)  # a leftover cluster from a lost state file
    wipe(entry)
    home.mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(exist_ok=True)
    _chown(home, user)
    _chown(home / "run", user)
    if home != SERVICES / name:
        say(f"{name}: the `postgres` user cannot reach {rel(SERVICES)}; cluster in {home}")
    port = pick_port("SW_PG_PORT" if name == "postgres" else "", taken, name)
    password = secrets.token_hex(16)
    entry.update(
        port=port,
        url=f"postgresql://{DB_USER}:{password}@127.0.0.1:{port}/{DB_NAME}",
        admin_url=f"postgresql://postgres@/postgres?host={home / 'run'}&port={port}",
    )
    setup_log = home / "setup.log"
    with step(f"{name}: initdb", setup_log):
        run(
            [
                str(pg_bin / "initdb"),
                "-D",
                entry["data"],
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            user=user,
            log=setup_log,
            timeout=120,
        )
        with (Path(entry["data"]) / "postgresql.conf").open("a") as conf:
            conf.write(SETTINGS.format(port=port, run_dir=entry["run"]))
    start(entry)
    with step(f"{name}: create role and database {DB_NAME}", setup_log):
        psql = [
            str(pg_bin / "psql"),
            "-h",
            entry["run"],
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        # Separate -c options: CREATE DATABASE cannot run inside the one implicit transaction.
        # CREATEDB lets tests make a fresh database each; the hex password needs no quoting.
        run(
            [
                *psql,
                "-c",
                f"CREATE ROLE {DB_USER} LOGIN CREATEDB PASSWORD '{password}'",
                "-c",
                f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}",
            ],
            user=user,
            log=setup_log,
        )
    with step(f"{name}: password login and SELECT 1"):
        check(entry["url"])


def start(entry: dict[str, Any]) -> None:
    """Start (or restart after `stop`) the cluster with its data, port and settings unchanged."""
    log = Path(entry["log"])
    offset = log.stat().st_size if log.exists() else 0  # judge only this start's lines
    with step(f"{entry.get('name', 'postgres')}: start on 127.0.0.1:{entry['port']}", log):
        try:
            run(
                [
                    str(Path(entry["bin"]) / "pg_ctl"),
                    "-D",
                    entry["data"],
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                user=entry["user"],
                timeout=90,
            )
        except StepFailed as exc:
            text = read_from(log, offset)
            if "could not bind" in text or "Address already in use" in text:
                raise StepFailed(f"port {entry['port']} is taken by another process", log) from exc
            raise StepFailed(f"{exc}; see {rel(log)}", log) from exc


def stop(entry: dict[str, Any]) -> None:
    """Fast shutdown (rolls back open transactions, drops connections); data stays."""
    found = pid(entry)
    if found is None or not pid_alive(found):
        return
    try:
        run(
            [str(Path(entry["bin"]) / "pg_ctl"), "-D", entry["data"], "-m", "fast", "-w", "stop"],
            user=entry["user"],
            timeout=90,
        )
    except StepFailed:
        terminate(found, "postgres", grace=20)


def wipe(entry: dict[str, Any]) -> None:
    """Remove the cluster's data (the log stays for post-mortems)."""
    for key in ("data", "run"):
        shutil.rmtree(entry[key], ignore_errors=True)


def check(url: str, timeout: float = 10) -> None:
    """Connect with the URL's password and run SELECT 1."""

    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            value = await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        if value != 1:
            raise StepFailed(f"SELECT 1 on {mask(url)} returned {value!r}")

    try:
        asyncio.run(probe())
    except StepFailed:
        raise
    except Exception as exc:  # asyncpg raises many types; all mean "does not answer"
        raise StepFailed(f"{mask(url)} does not answer: {type(exc).__name__}: {exc}") from exc
