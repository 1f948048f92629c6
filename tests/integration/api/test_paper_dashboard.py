"""`serve_dashboard`, as paper mode calls it: loopback, the outbox, a development operator
token in the printed link, and control messages handed to an in-process handler."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from strategy_worker.api import DirectControlSink, serve_dashboard
from strategy_worker.config import WorkerConfig
from strategy_worker.messages import ControlRequest, parse_control

from .conftest import Seeded


async def test_serve_dashboard_gives_a_working_link_and_controls_reach_the_handler(
    api_config: WorkerConfig, seeded: Seeded, api_db: str
) -> None:
    handed: list[tuple[bytes, str]] = []

    async def handle(payload: bytes, source: str) -> None:
        handed.append((payload, source))

    async with serve_dashboard(
        api_config, api_db, control_sink=DirectControlSink(handle, source="paper")
    ) as board:
        assert board.url.startswith("http://127.0.0.1:")
        assert board.link == f"{board.url}/#token={board.token}"
        headers = {"Authorization": f"Bearer {board.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(f"{board.url}/api/v1/me") as resp:
                me = await resp.json()
            async with http.get(f"{board.url}/") as resp:
                page = await resp.text()
            async with http.post(f"{board.url}/api/v1/executions/{seeded.others}/pause") as resp:
                assert resp.status == 202

    assert me["role"] == "operator"
    assert "Strategy Worker" in page
    ((payload, source),) = handed
    request = parse_control(payload)
    assert isinstance(request, ControlRequest)
    assert (request.execution_id, str(request.action), source) == (seeded.others, "pause", "paper")


async def test_tokens_never_reach_the_logs(
    api_config: WorkerConfig,
    seeded: Seeded,
    api_db: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_dashboard(api_config, api_db) as board, aiohttp.ClientSession() as http:
        for token in (board.token, board.token + "x", "garbage." + board.token):
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{board.url}/api/v1/executions", headers=headers):
                pass
            async with http.post(
                f"{board.url}/api/v1/executions/{seeded.own}/stop", headers=headers
            ):
                pass
        async with http.ws_connect(f"{board.url}/api/v1/stream") as ws:
            await ws.send_str(json.dumps({"type": "subscribe", "token": board.token + "x"}))
            await asyncio.wait_for(ws.receive(), 5)
    logged = caplog.text + "".join(capsys.readouterr())

    assert "api serving" in logged  # the logs were captured at all
    assert board.token[-40:] not in logged
