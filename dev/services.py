"""The service harness: real PostgreSQL, Redis and Kafka for tests, CI and local runs.

Entry point: ``scripts/services.sh up|down|status|env|start|stop|restart [SERVICE]``.
`up` installs what is missing (apt-get; Kafka's jars via Maven), starts each server on a free
loopback port in a throwaway directory under .services/ and writes .services/env (DATABASE_URL,
REDIS_URL, KAFKA_BOOTSTRAP_SERVERS, PG_*). A server already named by one of those variables in the
caller's environment is used as given: never started, stopped or restarted here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from dev.harness import kafka, postgres, redis
from dev.harness.common import (
    ENV_FILE,
    SERVICE_NAMES,
    SERVICES,
    STATE_FILE,
    TOPICS,
    URL_VARS,
    Apt,
    StepFailed,
    external_urls,
    find_pg_bin,
    load_state,
    locked,
    mask,
    rel,
    save_state,
    say,
    step,
    tail,
)

MODULES: dict[str, ModuleType] = {"postgres": postgres, "redis": redis, "kafka": kafka}
URL_KEYS = {"postgres": "url", "redis": "url", "kafka": "bootstrap"}


def url_of(name: str, entry: dict[str, Any]) -> str:
    return str(entry["url"] if not entry.get("managed") else entry[URL_KEYS[name]])


def check_external(name: str, url: str) -> None:
    """A server the caller named must answer before tests run against it."""
    with step(f"{name}: check {URL_VARS[name]}={mask(url)} (given, not started here)"):
        if name == "postgres":
            postgres.check(url)
        elif name == "redis":

            async def ping() -> None:
                from redis.asyncio import Redis

                client = Redis.from_url(url, socket_timeout=5)
                try:
                    await client.ping()
                finally:
                    await client.aclose()

            try:
                asyncio.run(ping())
            except Exception as exc:
                raise StepFailed(f"{mask(url)} does not answer PING: {exc}") from exc
        else:
            asyncio.run(kafka.count_brokers(url, 20))


def cmd_up() -> int:
    started = time.monotonic()
    with locked():
        state = load_state()
        given = external_urls()
        to_start = []
        for name in SERVICE_NAMES:
            entry = state.get(name) or {}
            module = MODULES[name]
            if name in given:
                if entry.get("managed"):  # ours from an earlier `up`: the caller now wants theirs
                    module.stop(entry)
                    module.wipe(entry)
                state[name] = {"managed": False, "url": given[name]}
            elif entry.get("managed") and module.running(entry):
                say(f"{name}: already running on 127.0.0.1:{entry['port']}")
            else:
                to_start.append(name)
        try:
            start(state, to_start)
            for name in SERVICE_NAMES:
                if not state[name].get("managed"):
                    check_external(name, state[name]["url"])
            with step("kafka: create topics " + ", ".join(TOPICS)):
                asyncio.run(kafka.ensure_topics(url_of("kafka", state["kafka"]), TOPICS))
            write_env(state)
        finally:
            save_state(state)
    say(f"up in {time.monotonic() - started:.1f} s; settings in {rel(ENV_FILE)}")
    print_summary(state)
    return 0


def start(state: dict[str, Any], names: list[str]) -> None:
    """Install what is missing, then start the servers; Kafka boots while the others start."""
    apt = Apt()
    missing = [pkg for name in names for pkg in MODULES[name].missing_packages()]
    # The dashboard's browser test drives Debian's headless Chromium (Playwright cannot
    # download its own browsers here); installed with the servers so a fresh machine has it.
    if shutil.which("chromium") is None:
        missing.append("chromium")
    apt.install(missing, "installing the servers")
    taken: set[int] = set()
    if "kafka" in names:
        libs = kafka.resolve_libs()
        state["kafka"] = {"managed": True}
        kafka.start_fresh(state["kafka"], taken, libs)
        save_state(state)
    for name in ("postgres", "redis"):
        if name in names:
            state[name] = {"managed": True}
            try:
                MODULES[name].start_fresh(state[name], taken)
            finally:
                save_state(state)
    if "kafka" in names:
        timeout = float(os.environ.get("SW_KAFKA_READY_TIMEOUT", "90"))
        kafka.wait_ready(state["kafka"], timeout)


def write_env(state: dict[str, Any]) -> None:
    values: dict[str, str] = {"SW_SERVICES_DIR": str(SERVICES)}
    for name in SERVICE_NAMES:
        values[URL_VARS[name]] = url_of(name, state[name])
    pg = state["postgres"]
    if pg.get("managed"):
        values.update(
            PG_BIN=pg["bin"],
            PG_DATA=pg["data"],
            PG_PORT=str(pg["port"]),
            PG_PID_FILE=str(Path(pg["data"]) / "postmaster.pid"),
            PG_OS_USER=pg["user"] or "",
            PG_ADMIN_URL=pg["admin_url"],
            PG_LOG=pg["log"],
        )
    if state["redis"].get("managed"):
        values["REDIS_PID_FILE"] = str(Path(state["redis"]["home"]) / "redis.pid")
    if state["kafka"].get("managed"):
        values["KAFKA_PID_FILE"] = str(Path(state["kafka"]["home"]) / "kafka.pid")
        values["KAFKA_LOG"] = state["kafka"]["log"]
    lines = [
        "# Written by scripts/services.sh up: the servers tests and the worker use.",
        "# Load into a shell with: . .services/env",
        *(f"export {key}={shlex.quote(value)}" for key, value in values.items()),
    ]
    tmp = ENV_FILE.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)  # holds the database password
    tmp.replace(ENV_FILE)


def print_summary(state: dict[str, Any]) -> None:
    for name in SERVICE_NAMES:
        entry = state.get(name) or {}
        if not entry:
            continue
        how = "started here" if entry.get("managed") else "given"
        sys.stdout.write(f"{URL_VARS[name]}={mask(url_of(name, entry))}  ({how})\n")


def cmd_down() -> int:
    with locked():
        state = load_state()
        for name in reversed(SERVICE_NAMES):
            entry = state.get(name) or {}
            if entry and not entry.get("managed"):
                say(f"{name}: given by {URL_VARS[name]}; left alone")
                continue
            if not entry:
                entry = leftover(name)
                if entry is None:
                    continue
            with step(f"{name}: stop"):
                MODULES[name].stop(entry)
                MODULES[name].wipe(entry)
        for name, entry in (state.get("instances") or {}).items():
            with step(f"{name}: stop"):
                postgres.stop(entry)
                postgres.wipe(entry)
                shutil.rmtree(entry["home"], ignore_errors=True)
        ENV_FILE.unlink(missing_ok=True)
        STATE_FILE.unlink(missing_ok=True)
    say("down")
    return 0


def leftover(name: str) -> dict[str, Any] | None:
    """Where an earlier `up` whose state file is gone would have left a running server."""
    if name == "kafka" and (kafka.HOME / "kafka.pid").exists():
        home = kafka.HOME
        return {
            "home": str(home),
            "data": str(home / "data"),
            "props": str(home / "server.properties"),
        }
    if name == "redis" and (redis.HOME / "redis.pid").exists():
        return {"home": str(redis.HOME)}
    data = SERVICES / "postgres" / "data"
    if name == "postgres" and (data / "postmaster.pid").exists():
        bin_dir = find_pg_bin()
        run_dir = SERVICES / "postgres" / "run"
        user = postgres.os_user()
        return {"bin": str(bin_dir), "data": str(data), "run": str(run_dir), "user": user}
    return None


def cmd_status(quiet: bool) -> int:
    state = load_state()
    all_up = bool(state)
    for name in SERVICE_NAMES:
        entry = state.get(name) or {}
        if not entry:
            line, up = "not started", False
        elif not entry.get("managed"):
            line, up = f"given by {URL_VARS[name]}={mask(entry['url'])}", True
        else:
            up = MODULES[name].running(entry)
            found = MODULES[name].pid(entry)
            where = f"{URL_VARS[name]}={mask(url_of(name, entry))} pid {found}"
            line = f"{'running' if up else 'NOT RUNNING'}  {where}  log {rel(Path(entry['log']))}"
        all_up = all_up and up
        if not quiet:
            sys.stdout.write(f"{name:9} {line}\n")
    for name, entry in (state.get("instances") or {}).items():
        if not quiet:
            up = postgres.running(entry)
            sys.stdout.write(
                f"{name:9} {'running' if up else 'stopped'}  "
                f"DATABASE_URL={mask(entry['url'])} (extra instance for fault tests)\n"
            )
    if not quiet and all_up:
        sys.stdout.write(f"settings: {rel(ENV_FILE)}\n")
    return 0 if all_up else 3


def cmd_service(action: str, name: str) -> int:
    """stop/start/restart one server we started, keeping its data and port (fault tests)."""
    with locked():
        state = load_state()
        entry = state.get(name) or {}
        if not entry:
            raise StepFailed(f"{name} is not up; run scripts/services.sh up first")
        if not entry.get("managed"):
            raise StepFailed(f"{name} was given by {URL_VARS[name]}; it is not ours to {action}")
        module = MODULES[name]
        if action in ("stop", "restart"):
            with step(f"{name}: stop"):
                module.stop(entry)
        if action in ("start", "restart") and not module.running(entry):
            if name == "kafka":
                kafka.launch(entry)
                kafka.wait_ready(entry, float(os.environ.get("SW_KAFKA_READY_TIMEOUT", "90")))
            else:
                module.start(entry)
        save_state(state)
    return 0


def cmd_instance(action: str, name: str) -> int:
    """Extra PostgreSQL clusters (.services/NAME) that fault tests may stop without disturbing
    the shared one. `up` prints its settings as one JSON object on stdout."""
    if not re.fullmatch(r"pg-[a-z0-9][a-z0-9-]{0,39}", name):
        raise StepFailed(f"instance name {name!r}: use pg-<lowercase letters, digits, dashes>")
    with locked():
        state = load_state()
        instances: dict[str, dict[str, Any]] = state.setdefault("instances", {})
        entry = instances.get(name)
        try:
            if action == "up":
                if entry is None or not postgres.running(entry):
                    if entry is not None:
                        postgres.stop(entry)
                        postgres.wipe(entry)
                    Apt().install(postgres.missing_packages(), "installing PostgreSQL")
                    entry = instances[name] = {"managed": True}
                    postgres.start_fresh(entry, set(), name)
                info = {
                    "url": entry["url"],
                    "admin_url": entry["admin_url"],
                    "port": entry["port"],
                    "pid_file": str(Path(entry["data"]) / "postmaster.pid"),
                    "log": entry["log"],
                }
                sys.stdout.write(json.dumps(info) + "\n")
            elif entry is None:
                raise StepFailed(
                    f"no instance {name}; run `scripts/services.sh instance up {name}`"
                )
            elif action == "down":
                postgres.stop(entry)
                postgres.wipe(entry)
                shutil.rmtree(entry["home"], ignore_errors=True)
                del instances[name]
            else:
                if action in ("stop", "restart"):
                    with step(f"{name}: stop"):
                        postgres.stop(entry)
                if action in ("start", "restart") and not postgres.running(entry):
                    postgres.start(entry)
        finally:
            save_state(state)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/services.sh", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start (or reuse) the servers and write .services/env")
    sub.add_parser("down", help="stop what `up` started and delete its data")
    status = sub.add_parser("status", help="what runs; exit 0 only when everything is up")
    status.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("env", help="print .services/env (eval it in a shell)")
    for action in ("start", "stop", "restart"):
        one = sub.add_parser(action, help=f"{action} one server started by `up` (data kept)")
        one.add_argument("service", choices=SERVICE_NAMES)
    instance = sub.add_parser("instance", help="an extra PostgreSQL for fault tests")
    instance.add_argument("action", choices=("up", "stop", "start", "restart", "down"))
    instance.add_argument("name", help="pg-<something unique>, e.g. pg-faults-<pid>")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up()
        if args.command == "down":
            return cmd_down()
        if args.command == "status":
            return cmd_status(args.quiet)
        if args.command == "env":
            if not ENV_FILE.exists():
                raise StepFailed("not up: no .services/env; run scripts/services.sh up")
            sys.stdout.write(ENV_FILE.read_text())
            return 0
        if args.command == "instance":
            return cmd_instance(args.action, args.name)
        return cmd_service(args.command, args.service)
    except StepFailed as exc:
        say(f"{args.command} FAILED: {exc}")
        if exc.log is not None and exc.log.exists():
            say(f"last lines of {rel(exc.log)}:\n{tail(exc.log)}")
        if args.command == "up":
            say("what did start is still running; `scripts/services.sh down` stops it")
        return 1
    except KeyboardInterrupt:
        say(f"{args.command} interrupted")
        return 130
    except Exception:  # a harness bug: keep the traceback, still say which command failed
        import traceback

        traceback.print_exc()
        say(f"{args.command} FAILED with an unexpected error (traceback above)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
