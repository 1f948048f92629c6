"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) on the
running stack: the production worker (`run_worker`), the API following Kafka, a strategy
published as the Cognitive Service would. Nothing is reloaded by the test: what appears
comes through the live stream. Screenshots go to var/screenshots/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from strategy_worker.api.followers import KafkaFollower
from strategy_worker.api.server import RunningApi, api_service
from strategy_worker.auth.tokens import dev_signing_key, issue_token

from .conftest import Db, RunningWorker, Topics, eventually
from .sample import EXECUTION_ID, ROOT, SAMPLE_BYTES, SYMBOLS, USER_ID

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots of each run (docs/dashboard.png: SW_UPDATE_DOCS_SCREENSHOT=1).
SHOTS = ROOT / "var" / "screenshots"


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, which `scripts/services.sh up` installs; a missing one fails."""
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run scripts/services.sh up (installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture
async def stack(
    start_worker: Callable[..., Awaitable[RunningWorker]],
    topics: Topics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[RunningWorker, RunningApi, str]]:
    monkeypatch.setenv("SW_DEV_KEY_DIR", str(tmp_path / "keys"))
    worker = await start_worker()
    config = worker.config
    follower = KafkaFollower(config.kafka, topic=topics.execution)
    async with api_service(config, follower=follower, port=0) as api:
        token = issue_token(
            user_id=USER_ID,
            operator=False,
            key=dev_signing_key(config),
            algorithm="EdDSA",
            now=datetime.now(UTC),
            ttl_s=3600,
        )
        yield worker, api, token


async def test_dashboard_shows_a_new_execution_its_fills_and_a_confirmed_pause_live(
    stack: tuple[RunningWorker, RunningApi, str],
    producer: AIOKafkaProducer,
    topics: Topics,
    db: Db,
    chromium: Path,
) -> None:
    from playwright.async_api import async_playwright

    _, api, token = stack
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1100})
            await page.goto(f"{api.url}/#token={token}")
            await page.wait_for_selector("[data-testid=live].on", timeout=15_000)
            assert "token=" not in page.url  # the token left the address bar

            # Publish a strategy; its execution appears in the open list without a reload.
            await producer.send_and_wait(topics.approved, SAMPLE_BYTES)
            row = page.locator("tr[data-testid=exec-row]")
            await row.first.wait_for(timeout=30_000)
            await page.screenshot(path=str(SHOTS / "dashboard-list.png"))
            await row.first.click()

            # Its orders fill, shown live.
            filled = page.locator("[data-testid=order-status]", has_text="FILLED")
            await eventually(
                lambda: _count_is(filled, len(SYMBOLS)), within=30, what="orders FILLED on page"
            )
            await page.wait_for_selector("[data-testid=marker-entry]", timeout=10_000)
            await page.screenshot(path=str(SHOTS / "dashboard-execution.png"), full_page=True)

            # Pause: the page asks first; cancel does nothing, confirm pauses.
            await page.click("[data-testid=btn-pause]")
            await page.click("[data-testid=confirm-cancel]")
            await page.click("[data-testid=btn-pause]")
            await page.fill("#confirm-reason", "browser test")
            await page.click("[data-testid=confirm-ok]")
            await page.wait_for_selector(
                "[data-testid=exec-status]:text('paused')", state="attached", timeout=30_000
            )
            await page.wait_for_selector("[data-testid=outcome]:text('APPLIED')", timeout=30_000)
            await page.screenshot(path=str(SHOTS / "dashboard-paused.png"), full_page=True)
        finally:
            await browser.close()

    (row_db,) = await db.executions()
    assert row_db["execution_id"] == EXECUTION_ID
    assert row_db["status"] == "paused"
    requests = await db.fetch("SELECT outcome, requested_by FROM control_requests")
    assert [(r["outcome"], r["requested_by"]) for r in requests] == [("APPLIED", str(USER_ID))]
    if os.environ.get("SW_UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(SHOTS / "dashboard-paused.png", ROOT / "docs" / "dashboard.png")


async def _count_is(locator: object, count: int) -> bool:
    return bool(await locator.count() == count)  # type: ignore[attr-defined]
