"""`strategy-worker bars import FILE.csv`: a bar file (OHLCV or prices) into `market_bars`.

The file is read and validated whole first (`adapters/bar_files.py`): a malformed row
stops the import before anything is written, unless `skip_invalid`. Bars are then written
in chunks of `chunk` rows, one statement each; an existing bar is kept unless `replace`
(see `MarketDataStore.upsert_bars`), so importing the same file twice writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from strategy_worker.adapters.bar_files import BarFile
from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.connect import connect_with_retry
from strategy_worker.adapters.postgres.errors import MigrationError
from strategy_worker.adapters.postgres.market_data import MarketDataStore
from strategy_worker.adapters.postgres.migrate import pending_versions


@dataclass(frozen=True, slots=True)
class ImportResult:
    read: int
    """Bars in the file (after building them from prices, for a price file)."""
    written: int
    """Rows inserted or replaced (the rest were already there)."""
    skipped: int
    """Malformed rows left out (only with `skip_invalid`)."""


async def import_bars(
    config: DatabaseConfig,
    bar_file: BarFile,
    *,
    source: str,
    replace: bool = False,
    chunk: int = 5000,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ImportResult:
    """Write every bar of `bar_file`; the schema must be migrated (`db migrate`)."""

    async def attempt() -> asyncpg.Pool:
        return await asyncpg.create_pool(config.dsn(), min_size=1, max_size=1)

    pool = await connect_with_retry(
        attempt,
        where=config.where(),
        hint=config.setting_hint(),
        attempts=config.connect_attempts,
        base=config.connect_backoff,
        cap=config.connect_backoff_max,
    )
    try:
        async with pool.acquire() as conn:
            pending = await pending_versions(conn)
        if pending:
            raise MigrationError(
                f"migrations {', '.join(pending)} are pending: run `strategy-worker db migrate`"
            )
        store = MarketDataStore(pool)
        bars = bar_file.bars
        written = 0
        received_at = now()
        for index in range(0, len(bars), chunk):
            written += await store.upsert_bars(
                bars[index : index + chunk], source=source, received_at=received_at, replace=replace
            )
    finally:
        await pool.close()
    return ImportResult(read=len(bars), written=written, skipped=bar_file.skipped)
