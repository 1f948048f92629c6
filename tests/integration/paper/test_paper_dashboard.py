"""`strategy-worker paper --dashboard`: the newcomer's one command shows the web view, and
its buttons steer the paper worker (issue 15: paper mode shows it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(240)

CLI = Path(sys.executable).parent / "strategy-worker"
ROOT = Path(__file__).resolve().parents[3]


async def _link(proc: subprocess.Popen[str], within_s: float) -> str:
    """The dashboard line the command prints before the session starts."""
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), within_s)
        if line.startswith("dashboard: "):
            return line.removeprefix("dashboard: ").strip()
        assert line or proc.poll() is None, "paper mode ended before printing its dashboard"
    raise AssertionError("no dashboard line")


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def _start_paper(log: Path) -> subprocess.Popen[str]:
    """The README's paper command with the dashboard (the example strategies and prices)."""
    return subprocess.Popen(
        [str(CLI), "paper", "--dashboard", "--json", "--duration", "2h", "--speed", "60"],
        cwd=ROOT,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


async def test_paper_dashboard_lists_the_executions_and_its_pause_button_pauses_one(
    tmp_path: Path,
) -> None:
    proc = _start_paper(tmp_path / "paper.log")
    try:
        link = await _link(proc, 120)
        base, token = link.split("/#token=")
        assert base.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as page:  # the dashboard itself
                assert page.status == 200
                assert "text/html" in page.headers["content-type"]
            listed: dict[str, Any] = {"executions": []}
            deadline = time.monotonic() + 30
            while len(listed["executions"]) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                listed = await _get(session, f"{base}/api/v1/executions", token)
            assert len(listed["executions"]) == 3  # the three example strategies
            execution_id = listed["executions"][0]["execution_id"]

            async with session.post(
                f"{base}/api/v1/executions/{execution_id}/pause",
                json={"reason": "from the paper dashboard"},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 202, await response.text()
                request_id = (await response.json())["request_id"]

            # The worker's clock is simulated; the token's validity is real time.
            outcome: dict[str, Any] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                outcome = await _get(session, f"{base}/api/v1/control-requests/{request_id}", token)
                if outcome["outcome"] not in (None, "PENDING"):
                    break
                await asyncio.sleep(0.2)
            assert outcome["outcome"] == "APPLIED", outcome
            detail = await _get(session, f"{base}/api/v1/executions/{execution_id}", token)
            assert detail["status"] == "paused"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
