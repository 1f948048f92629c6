"""Load test of the API's live stream: many WebSocket clients on loopback while events flow.

    .venv/bin/python bench/bench_api_stream.py                   # 1,000 clients, 20 s
    .venv/bin/python bench/bench_api_stream.py --clients 200 --seconds 10

Runs `strategy-worker api` (the production entry, its own process, following a fresh Kafka
topic) against the services of `scripts/services.sh up`, connects N clients (as 100 users,
plus a few operators) and produces execution events at a fixed rate. Midway it closes a
share of the clients, keeps producing, and reconnects them with their last cursor. It
reports the latency from the produce call to each client's receipt (an upper bound of
"event on Kafka -> client": it includes the produce round trip), whether every client got
every event it may see exactly once, and the API process's CPU and resident memory. Bounded
in clients, rate and time; loopback only. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, load_services_env

USERS = 100
OPERATORS = 10


@dataclass
class Client:
    user: uuid.UUID
    operator: bool
    token: str
    cursor: str | None = None
    got: list[int] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    #: perf_counter window while it was forced away: its replayed events are not latency.
    away: tuple[float, float] = (0.0, 0.0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_api(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`strategy-worker api`, the production entry, in its own process."""
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "strategy-worker"), "api"], env=env, cwd=ROOT
    )


async def make_topic(bootstrap: str, partitions: int) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = f"bench.api.execution.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    await asyncio.sleep(1.0)
    return name


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import websockets
    from aiokafka import AIOKafkaProducer

    from strategy_worker.auth.tokens import dev_signing_key, issue_token
    from strategy_worker.config_loader import load_config

    env = {**os.environ, **load_services_env()}
    keys = tempfile.mkdtemp(prefix="bench-keys-")
    topic = await make_topic(env["KAFKA_BOOTSTRAP_SERVERS"], 3)
    port = free_port()
    api_env = {
        **env,
        "SW_DEV_KEY_DIR": keys,
        "SW__KAFKA__TOPICS__EXECUTION": topic,
        "SW__API__PORT": str(port),
        "SW__API__STREAM__HEARTBEAT": "5",
        "SW__LOGGING__LEVEL": "WARNING",
    }
    os.environ["SW_DEV_KEY_DIR"] = keys
    config = load_config(ROOT / "config" / "config.yaml", api_env)
    key = dev_signing_key(config)
    proc = spawn_api(api_env)
    api = psutil.Process(proc.pid)
    url = f"ws://127.0.0.1:{port}/api/v1/stream"
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            await asyncio.sleep(0.1)
        users = [uuid.uuid4() for _ in range(USERS)]
        now = time.time()

        def token(user: uuid.UUID, operator: bool) -> str:
            from datetime import UTC, datetime

            return issue_token(
                user_id=user,
                operator=operator,
                key=key,
                algorithm="EdDSA",
                now=datetime.fromtimestamp(now, UTC),
                ttl_s=3600,
            )

        clients = [Client(users[i % USERS], False, "") for i in range(args.clients - OPERATORS)] + [
            Client(uuid.uuid4(), True, "") for _ in range(OPERATORS)
        ]
        for c in clients:
            c.token = token(c.user, c.operator)
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        stamped: list[tuple[float, float]] = []  # (sent at, latency) for the quiet window

        async def listen(c: Client, ready: asyncio.Event) -> None:
            async with websockets.connect(url, max_queue=None, compression=None) as ws:
                await ws.send(
                    json.dumps({"type": "subscribe", "token": c.token, "cursor": c.cursor})
                )
                async for raw in ws:
                    frame = json.loads(raw)
                    c.cursor = frame.get("cursor", c.cursor)
                    if frame["type"] in ("hello", "reset"):
                        ready.set()
                    elif frame["type"] == "event":
                        n = frame["event"]["n"]
                        c.got.append(n)
                        if not c.away[0] <= sent_at[n] <= c.away[1]:
                            latencies.append(time.perf_counter() - sent_at[n])
                            stamped.append((sent_at[n], latencies[-1]))

        async def start(c: Client) -> None:
            ready = asyncio.Event()
            c.task = asyncio.create_task(listen(c, ready))
            await asyncio.wait_for(ready.wait(), 30)

        async def back_again(group: list[Client]) -> None:
            async def one(c: Client, delay: float) -> None:
                await asyncio.sleep(delay)
                await start(c)

            # Reconnects spread over `--reconnect-spread` s, as clients with jittered backoff
            # come back (0: all in the same instant, the worst case).
            spread = args.reconnect_spread
            await asyncio.gather(*(one(c, spread * i / len(group)) for i, c in enumerate(group)))
            back = time.perf_counter()
            for c in group:
                c.away = (c.away[0], back)

        connect_started = time.perf_counter()
        for i in range(0, len(clients), 100):
            await asyncio.gather(*(start(c) for c in clients[i : i + 100]))
        connect_s = time.perf_counter() - connect_started

        producer = AIOKafkaProducer(
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all", linger_ms=0
        )
        await producer.start()
        cpu_before = api.cpu_times()
        me = psutil.Process()
        me_before = me.cpu_times()
        machine_before = psutil.cpu_times()
        rss_peak = api.memory_info().rss
        total = int(args.rate * args.seconds)
        owners: dict[int, uuid.UUID] = {}
        reconnect = clients[: args.reconnect]
        rejoin: asyncio.Task[None] | None = None
        started = time.perf_counter()
        try:
            for n in range(total):
                target = started + n / args.rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                user = users[n % USERS]
                owners[n] = user
                payload = json.dumps(
                    {
                        "type": "strategy.execution.order_filled",
                        "execution_id": str(uuid.uuid4()),
                        "user_id": str(user),
                        "n": n,
                        "price": 175.5,
                    }
                ).encode()
                sent_at[n] = time.perf_counter()
                await producer.send(
                    topic,
                    payload,
                    key=user.bytes,
                    headers=[("event-id", str(uuid.uuid4()).encode())],
                )
                if n == total // 3:  # forced disconnect of a share of the clients
                    for c in reconnect:
                        assert c.task is not None
                        # Events sent shortly before the cut may still be in flight: they
                        # come back in the replay, which is not live latency either.
                        c.away = (time.perf_counter() - 1.0, float("inf"))
                        c.task.cancel()
                if n == total // 2:  # ... and they come back with their cursor
                    rejoin = asyncio.create_task(back_again(reconnect))
                if n % 200 == 0:
                    rss_peak = max(rss_peak, api.memory_info().rss)
            await producer.flush()
            if rejoin is not None:
                await rejoin
            await asyncio.sleep(2.0)
        finally:
            await producer.stop()
        elapsed = time.perf_counter() - started
        cpu_after = api.cpu_times()
        me_after = me.cpu_times()
        machine_after = psutil.cpu_times()
        rss_peak = max(rss_peak, api.memory_info().rss)
        for c in clients:
            if c.task is not None:
                c.task.cancel()
        await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)
        missing = duplicated = 0
        for c in clients:
            expected = [n for n in range(total) if c.operator or owners[n] == c.user]
            missing += len(set(expected) - set(c.got))
            duplicated += len(c.got) - len(set(c.got))
        cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        return {
            "clients": len(clients),
            "events": total,
            "deliveries": sum(len(c.got) for c in clients),
            "latency_samples": len(latencies),
            "rate_per_s": args.rate,
            "reconnected_clients": len(reconnect),
            "reconnect_spread_s": args.reconnect_spread,
            "connect_all_s": round(connect_s, 2),
            "latency_ms": {
                "p50": round(percentile(latencies, 50) * 1000, 2),
                "p99": round(percentile(latencies, 99) * 1000, 2),
                "max": round(max(latencies) * 1000, 2) if latencies else None,
                "mean": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
            },
            "latency_ms_outside_reconnect_burst": quiet(stamped, reconnect),
            "p99_ms_per_second": timeline(stamped, started),
            "clients_missing_events": sum(
                1
                for c in clients
                if set(n for n in range(total) if c.operator or owners[n] == c.user) - set(c.got)
            ),
            "events_missing": missing,
            "events_duplicated": duplicated,
            "api_cpu_cores": round(cpu_s / elapsed, 3),
            "api_rss_mib_peak": round(rss_peak / 2**20, 1),
            "bench_clients_cpu_cores": round(
                (me_after.user + me_after.system - me_before.user - me_before.system) / elapsed, 3
            ),
            "machine_busy_cores": round(
                sum(
                    getattr(machine_after, f) - getattr(machine_before, f)
                    for f in ("user", "system", "nice", "softirq", "irq")
                )
                / elapsed,
                2,
            ),
            "p99_under_100ms": percentile(latencies, 99) < 0.100,
        }
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()


def quiet(stamped: list[tuple[float, float]], group: list[Client]) -> dict[str, float]:
    """Percentiles of events sent before the forced disconnect or 2 s after the reconnect
    (the burst of 200 handshakes and replays runs in this same client process)."""
    if not group:
        return {}
    start, end = group[0].away[0], max(c.away[1] for c in group) + 2.0
    values = [lat for sent, lat in stamped if not start <= sent <= end]
    return {
        "p50": round(percentile(values, 50) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "samples": len(values),
    }


def timeline(stamped: list[tuple[float, float]], started: float) -> list[float]:
    """p99 of each second of sending (where a tail comes from: a burst, or everywhere)."""
    bins: dict[int, list[float]] = {}
    for sent, lat in stamped:
        bins.setdefault(int(sent - started), []).append(lat)
    return [round(percentile(bins[k], 99) * 1000, 1) for k in sorted(bins)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reconnect", type=int, default=200, help="clients forced to reconnect")
    parser.add_argument(
        "--reconnect-spread", type=float, default=1.0, help="seconds the reconnects spread over"
    )
    args = parser.parse_args()
    if not (1 <= args.clients <= 2000 and args.seconds <= 120 and args.rate <= 2000):
        parser.error("bounded: at most 2,000 clients, 120 s and 2,000 events/s")
    import uvloop

    result = uvloop.run(run(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
