"""An embedded PostgreSQL for paper runs, from the `pgserver` wheel (PostgreSQL 16 binaries).

Paper mode keeps one SQL dialect and one driver with production: the same migrations and the
same asyncpg repository run against this server, which listens on a Unix socket only.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from strategy_worker.errors import StoreError


class EmbeddedPostgres:
    """Start (or reuse) a private PostgreSQL in `data_dir`; a temporary one when None.

    A temporary directory is deleted on exit; a given one is kept so a run can be inspected.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self._given = data_dir
        self._dir: Path | None = None
        self._server: Any = None

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise StoreError("embedded PostgreSQL is not started")
        uri: str = self._server.get_uri()
        return uri

    async def start(self) -> str:
        """Start the server and return its DSN (a Unix-socket URI)."""
        await asyncio.to_thread(self._start_sync)
        return self.dsn

    def _start_sync(self) -> None:
        # pgserver warns when XDG_RUNTIME_DIR is unset (usual for root in CI); harmless here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # heavy import, only paper mode needs it

        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            self._dir = self._given
            mode = "stop"
        else:
            # Short path: Unix socket paths are limited to ~107 bytes.
            self._dir = Path(tempfile.mkdtemp(prefix="swpg-"))
            mode = "delete"
        try:
            self._server = pgserver.get_server(self._dir, cleanup_mode=mode)  # type: ignore[attr-defined]
        except Exception as exc:
            raise StoreError(f"embedded PostgreSQL failed to start in {self._dir}: {exc}") from exc

    async def stop(self) -> None:
        """Stop the server; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.cleanup)
        if self._given is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
