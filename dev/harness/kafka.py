"""Apache Kafka 4.1.1, one KRaft node (broker+controller), run from its Maven Central jars.

dev/kafka/pom.xml is resolved once into a cache outside the repository keyed by the pom's hash
(and Maven's own ~/.m2), so only the first run downloads. The broker runs in the background on
Java 17+ with a 512 MB heap; its log is .services/kafka/kafka.log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shlex
import shutil
import string
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from dev.harness.common import (
    KAFKA_DEV,
    SERVICES,
    StepFailed,
    cmdline,
    find_java,
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

HOME = SERVICES / "kafka"
STARTED = "Kafka Server started"
JVM_OPTS = (
    "-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 "
    "-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"
)
# aiokafka logs every refused connection while the broker boots; the harness reports on its own.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def missing_packages() -> list[str]:
    packages = []
    if find_java() is None:
        packages.append("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        packages.append("maven")
    return packages


def cache_root() -> Path:
    if os.environ.get("SW_CACHE_DIR"):
        return Path(os.environ["SW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "strategy-worker"


def resolve_libs() -> Path:
    """The broker's jars: cached per pom hash; resolved with Maven on the first run."""
    pom = KAFKA_DEV / "pom.xml"
    key = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    libs = cache_root() / f"kafka-libs-{key}"
    if (libs / ".complete").exists():
        say(f"kafka: jars cached in {libs}")
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StepFailed("Maven (mvn) not found (Debian package: maven)")
    log = SERVICES / "kafka-maven.log"
    log.unlink(missing_ok=True)
    tmp = libs.with_name(f".{libs.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with step("kafka: resolve jars from Maven Central (first run only)", log):
        cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"]
        cmd += ["-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
        try:
            run(cmd, log=log, timeout=1200)
        except StepFailed as exc:
            raise StepFailed(
                f"Maven could not resolve {rel(pom)} (is Maven Central reachable?), see {rel(log)}",
                log,
            ) from exc
        if not list(tmp.glob("kafka_2.13-*.jar")):
            raise StepFailed(f"Maven produced no kafka_2.13 jar in {tmp}, see {rel(log)}", log)
        (tmp / ".complete").write_text(f"{pom.read_text()}\n")
        try:
            tmp.rename(libs)
        except OSError:  # another checkout resolved the same pom meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return libs


def cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding (as random-uuid)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids that look like a command-line flag
            return cid


def pid(entry: dict[str, Any]) -> int | None:
    return read_pid(Path(entry["home"]) / "kafka.pid")


def running(entry: dict[str, Any]) -> bool:
    found = pid(entry)
    return (
        found is not None
        and pid_alive(found)
        and entry["props"] in cmdline(found)
        and port_answers(int(entry["port"]))
    )


def start_fresh(entry: dict[str, Any], taken: set[int], libs: Path) -> None:
    """Write server.properties, format a new storage directory and launch the broker.

    Returns right after the launch; `wait_ready` waits for it, so PostgreSQL and Redis can be
    set up while the JVM boots.
    """
    java = find_java()
    if java is None:
        raise StepFailed("Java 17+ not found (Debian package: openjdk-17-jre-headless)")
    props = HOME / "server.properties"
    entry.update(
        home=str(HOME),
        data=str(HOME / "data"),
        props=str(props),
        log=str(HOME / "kafka.log"),
        libs=str(libs),
        java=java,
    )
    stop(entry)  # a leftover broker from a lost state file
    wipe(entry)
    HOME.mkdir(parents=True, exist_ok=True)
    Path(entry["log"]).unlink(missing_ok=True)
    port = pick_port("SW_KAFKA_PORT", taken, "kafka")
    controller_port = pick_port("SW_KAFKA_CONTROLLER_PORT", taken, "kafka controller")
    entry.update(port=port, controller_port=controller_port, bootstrap=f"127.0.0.1:{port}")
    template = string.Template((KAFKA_DEV / "server.properties.template").read_text())
    props.write_text(
        template.substitute(
            broker_port=port, controller_port=controller_port, data_dir=entry["data"]
        )
    )
    with step("kafka: format KRaft storage", HOME / "format.log"):
        run(
            [
                java,
                f"-Dlog4j2.configurationFile={KAFKA_DEV / 'tools-log4j2.properties'}",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id(),
                "-c",
                str(props),
            ],
            log=HOME / "format.log",
            timeout=120,
        )
    launch(entry)


def launch(entry: dict[str, Any]) -> None:
    home = Path(entry["home"])
    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms512m -Xmx512m")
    argv = [
        entry["java"],
        *shlex.split(heap),
        *shlex.split(JVM_OPTS),
        f"-Dkafka.logs.dir={home}",
        f"-Dlog4j2.configurationFile={KAFKA_DEV / 'log4j2.properties'}",
        "-cp",
        f"{entry['libs']}/*",
        "kafka.Kafka",
        entry["props"],
    ]
    say(f"kafka: launching broker on 127.0.0.1:{entry['port']} (log {rel(Path(entry['log']))})")
    with Path(entry["log"]).open("ab") as log:
        entry["log_offset"] = log.tell()
        proc = subprocess.Popen(  # noqa: S603 - our java, our jars, our properties
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this command; stopped by `down` via its pid
            cwd=home,
        )
    (home / "kafka.pid").write_text(f"{proc.pid}\n")


def wait_ready(entry: dict[str, Any], timeout: float) -> None:
    """Until the broker logs that it started and answers a metadata request."""
    log = Path(entry["log"])
    port = int(entry["port"])
    with step(f"kafka: wait until ready (up to {timeout:.0f} s)", log):
        deadline = time.monotonic() + timeout
        offset = int(entry.get("log_offset", 0))
        while True:
            text = read_from(log, offset)
            found = pid(entry)
            if found is None or not pid_alive(found):
                if "Address already in use" in text or "BindException" in text:
                    raise StepFailed(
                        f"port {port} or {entry['controller_port']} is taken by another "
                        f"process; Kafka exited, see {rel(log)}",
                        log,
                    )
                raise StepFailed(f"Kafka exited during startup, see {rel(log)}", log)
            if STARTED in text:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"Kafka not ready in {timeout:.0f} s, see {rel(log)}", log)
            time.sleep(0.3)
        brokers = asyncio.run(count_brokers(entry["bootstrap"], deadline - time.monotonic()))
        if brokers < 1:
            raise StepFailed(f"Kafka logged '{STARTED}' but lists no broker, see {rel(log)}", log)


async def count_brokers(bootstrap: str, within_s: float) -> int:
    """Brokers in the cluster's metadata, retried for ``within_s`` (raises StepFailed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + max(within_s, 5.0)
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
            return len(cluster.get("brokers", []))
        except Exception as exc:  # connection refused, timeouts, metadata not yet there
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise StepFailed(f"Kafka at {bootstrap} does not answer metadata requests: {last!r}")


async def ensure_topics(bootstrap: str, topics: dict[str, int], within_s: float = 30) -> None:
    """Create missing topics (replication 1) and wait until every partition has a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await asyncio.wait_for(admin.start(), 20)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, p, 1) for n, p in topics.items() if n not in existing]
        if new:
            response = await admin.create_topics(new)
            for name, code, *rest in response.topic_errors:
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a concurrent creator)
                    raise StepFailed(f"creating topic {name} failed: error {code} {rest}")
        deadline = time.monotonic() + within_s
        while True:
            described = {t["topic"]: t for t in await admin.describe_topics(list(topics))}
            missing = [
                name
                for name in topics
                if name not in described
                or described[name]["error_code"] != 0
                or not described[name]["partitions"]
                or any(p["leader"] < 0 for p in described[name]["partitions"])
            ]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"topics without a leader after {within_s:.0f} s: {missing}")
            await asyncio.sleep(0.3)
        for name, partitions in topics.items():
            have = len(described[name]["partitions"])
            if have != partitions:
                say(f"kafka: topic {name} exists with {have} partitions (spec wants {partitions})")
    finally:
        await admin.close()


def stop(entry: dict[str, Any]) -> None:
    found = pid(entry)
    if found is not None:
        # Controlled shutdown of a single node takes a few seconds; the data is throwaway.
        terminate(found, entry["props"], grace=30)


def wipe(entry: dict[str, Any]) -> None:
    shutil.rmtree(entry["data"], ignore_errors=True)
    (Path(entry["home"]) / "kafka.pid").unlink(missing_ok=True)
