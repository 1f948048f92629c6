"""`strategy-worker run`: the production worker until SIGTERM/SIGINT (see `wiring.py`), with
the process's garbage collection tuned for a long-running loop (`gc_tuning.py`)."""

from __future__ import annotations

import asyncio

from strategy_worker.config import WorkerConfig
from strategy_worker.log import get_logger
from strategy_worker.runtime.gc_tuning import GcPolicy
from strategy_worker.runtime.wiring import App, build_worker, install_signal_handlers

_log = get_logger(__name__)


async def run_worker(config: WorkerConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (or a signal arrives); returns the process exit code."""
    stop = stop or asyncio.Event()
    forced: list[asyncio.Task[None]] = []
    apps: list[App] = []

    def force() -> None:
        if apps and not forced:
            forced.append(asyncio.create_task(apps[0].abandon(), name="forced-quit"))

    restore = install_signal_handlers(stop, force=force)
    gc_policy = GcPolicy.install()
    thaw = asyncio.create_task(gc_policy.thaw_forever(), name="gc-thaw")
    try:
        async with build_worker(config) as app:
            apps.append(app)
            code = await app.run(stop)
    finally:
        thaw.cancel()
        gc_policy.uninstall()
        restore()
    _log.info("worker stopped", exit_code=code)
    return code
