"""`strategy-worker run` as a real process: SIGTERM shuts it down cleanly by policy.

`close` (the spec's default): every position closed, every execution `stopped`, exit 0 within
the grace period. `handover`: positions stay open and the leases are released so another
worker resumes at once. The paper OMS runs in the test's event loop; the process reaches it,
PostgreSQL, Redis and Kafka through the environment only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from strategy_worker.oms_sim.server import OmsSimServer

from .conftest import (
    CONFIG_FILE,
    WORKER_BIN,
    Db,
    RunningWorker,
    TopicReader,
    Topics,
    WorkerEnv,
    committed_offsets,
    eventually,
)
from .sample import (
    EXECUTION_ID,
    ROOT,
    SAMPLE_BYTES,
    SYMBOLS,
    execution_of,
    expected_quantity,
    other_strategy,
)

pytestmark = pytest.mark.integration

GRACE_PERIOD = 10.0  # SW__EXECUTION__GRACE_PERIOD in worker_env


@dataclass
class WorkerProcess:
    proc: asyncio.subprocess.Process
    log: Path

    async def terminate(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig`, then the exit code; fails when it takes longer than the grace period."""
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(GRACE_PERIOD + 2):
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"no exit within the grace period; log tail:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


SpawnWorker = Callable[..., Awaitable[WorkerProcess]]


@pytest.fixture
async def spawn_worker(worker_env: WorkerEnv, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """Start `strategy-worker run` in its own session; killed at teardown if still alive."""
    started: list[WorkerProcess] = []

    async def spawn(**overrides: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        env = {
            **os.environ,
            **worker_env.values,
            **overrides,
            "CONFIG_PATH": str(CONFIG_FILE),
        }
        with log.open("wb") as handle:
            proc = await asyncio.create_subprocess_exec(
                str(WORKER_BIN),
                "run",
                env=env,
                cwd=str(ROOT),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=handle,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log)
        started.append(worker)

        async def healthy() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{worker.log_tail()}")
            url = f"http://127.0.0.1:{worker_env.health_port}/health"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                timeout = aiohttp.ClientTimeout(total=2)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url) as resp,
                ):
                    return resp.status == 200
            return False

        await eventually(healthy, within=40, what="worker process /health", every=0.1)
        return worker

    try:
        yield spawn
    finally:
        for worker in started:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                await worker.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_every_position_and_exits_zero_within_grace_period(
    sig: signal.Signals,
    spawn_worker: SpawnWorker,
    producer: AIOKafkaProducer,
    read_topic: Callable[[str], Awaitable[TopicReader]],
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
    kafka_bootstrap: str,
) -> None:
    events = await read_topic(topics.execution)
    worker = await spawn_worker()
    second, second_strategy = other_strategy("sigterm")
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await producer.send_and_wait(topics.approved, second)
    executions = [EXECUTION_ID, execution_of(second_strategy)]
    for execution_id in executions:
        await eventually(
            functools.partial(db.all_filled, execution_id, 3),
            within=20,
            what="initial orders filled",
        )

    assert await worker.terminate(sig) == 0, worker.log_tail()

    rows = await db.executions()
    assert sorted(r["execution_id"] for r in rows) == sorted(executions)
    for row in rows:
        execution_id = row["execution_id"]
        assert row["status"] == "stopped", row["status"]
        assert row["stop_reason"] == "worker shutdown"
        assert row["owner_id"] is None  # lease released
        assert await db.held(execution_id) == {}
        closes = [r for r in await db.orders(execution_id) if r["purpose"] == "CLOSE"]
        assert sorted((r["symbol"], r["status"]) for r in closes) == [
            (symbol, "FILLED") for symbol in SYMBOLS
        ]
        book = oms.venue.execution_book(execution_id)
        assert all(book.net(symbol) == 0 for symbol in SYMBOLS)
    # Offsets were committed on the way out: a restart replays nothing.
    assert await committed_offsets(kafka_bootstrap, topics.group, topics.approved) == {0: 2}
    # The stopped events were published before the process exited.
    stopped = await eventually(lambda: _stopped_ids(events), within=5, what="two stopped events")
    assert stopped == sorted(str(e) for e in executions)


async def _stopped_ids(events: TopicReader) -> list[str] | None:
    ids = sorted(e["execution_id"] for e in events.of_type("stopped"))
    return ids if len(ids) >= 2 else None


async def test_sigterm_with_handover_policy_leaves_positions_open_and_leases_released(
    spawn_worker: SpawnWorker,
    start_worker: Callable[..., Awaitable[RunningWorker]],
    producer: AIOKafkaProducer,
    topics: Topics,
    db: Db,
    oms: OmsSimServer,
) -> None:
    worker = await spawn_worker(SW__EXECUTION__SHUTDOWN_POLICY="handover")
    await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
    await eventually(lambda: db.all_filled(EXECUTION_ID, 3), within=20, what="orders filled")

    async def legs_rest() -> bool:
        legs = [r for r in await db.orders(EXECUTION_ID) if r["order_type"] == "STOP"]
        return len(legs) == 3 and all(r["status"] == "ACCEPTED" for r in legs)

    await eventually(legs_rest, within=20, what="stop-loss legs resting at the OMS")

    assert await worker.terminate() == 0, worker.log_tail()

    (row,) = await db.executions()
    assert row["status"] == "active"
    assert row["owner_id"] is None  # lease released: free to resume at once
    assert row["lease_expires_at"] is None
    held = await db.held(EXECUTION_ID)
    assert held == {s: expected_quantity(s) for s in SYMBOLS}
    # The three buys, and the sample's stop-loss resting at the OMS (one leg per position):
    # handed over with the positions, still protecting them.
    recorded = await db.orders(EXECUTION_ID)
    assert [r["purpose"] for r in recorded] == ["INITIAL"] * 3 + ["STOP_LOSS"] * 3
    assert all(r["status"] == "ACCEPTED" for r in recorded if r["order_type"] == "STOP")
    book = oms.venue.execution_book(EXECUTION_ID)
    assert {s: book.net(s) for s in held} == held

    # Another worker takes the execution over without waiting for a lease to expire, and
    # resumes it as it was: same positions, nothing sent again.
    await start_worker(WORKER_ID="successor", SW__EXECUTION__SHUTDOWN_POLICY="handover")

    async def owned() -> bool:
        (current,) = await db.executions()
        return bool(current["owner_id"] == "successor")

    await eventually(owned, within=5, what="successor owns the execution")
    assert await db.held(EXECUTION_ID) == held
    assert len(oms.venue.order_log) == 6  # nothing sent again
