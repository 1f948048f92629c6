"""Production `PriceSource`: last prices the market-data side writes to Redis.

Format (docs/messages.md, "Prices in Redis"): one hash per symbol at `<key_prefix><SYMBOL>`
(default `prices:AAPL`) with fields
    price  the last trade price as a decimal string, e.g. "175.50"
    ts     when it traded, ISO-8601 with a zone, e.g. "2024-01-01T00:00:00Z"
All symbols are read in one round trip (a non-transactional pipeline of HMGETs). A missing,
malformed, non-positive or non-finite price, and a price older than `price_max_age`, are
skipped (counted in `strategy_prices_skipped_total{reason}`); the caller sees the symbol as
having no price. Nothing here ever raises for bad data. After each write the market-data side
announces the symbol on `redis.price_channel` (see `redis_price_feed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from strategy_worker.config import RedisSection
from strategy_worker.errors import TransientError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics

_log = get_logger(__name__)
_MAX_PRICE_CHARS = 40  # far beyond any real price; bounds Decimal parsing of hostile data


def parse_price(raw: bytes | str | None) -> Decimal | None:
    """A strictly positive finite Decimal from its text, or None (never raises)."""
    if raw is None:
        return None
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None
    text = text.strip()
    if not text or len(text) > _MAX_PRICE_CHARS:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0:
        return None
    return value


def parse_timestamp(raw: bytes | str | None) -> datetime | None:
    """An aware datetime from ISO-8601, or None (never raises)."""
    if raw is None:
        return None
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        moment = datetime.fromisoformat(text.strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def redis_client(config: RedisSection, **options: object) -> aioredis.Redis:
    """A client from config: URL (redis:// or rediss://) or host/port, password and TLS."""
    password = config.password.get_secret_value() if config.password else None
    kwargs: dict[str, object] = {
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.socket_timeout,
        **options,
    }
    if password is not None:
        kwargs["password"] = password
    url = config.connection_url()
    if url.startswith("rediss://") and config.ca_file is not None:
        kwargs["ssl_ca_certs"] = str(config.ca_file)
    return aioredis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]


class RedisPriceSource:
    """Reads the last price of many symbols in one round trip; skips bad or stale data."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str = "prices:",
        max_age: timedelta = timedelta(seconds=120),
        metrics: WorkerMetrics | None = None,
        now: Callable[[], datetime] | None = None,
        owns_client: bool = True,
        ping_timeout: float = 2.0,
    ) -> None:
        if ping_timeout <= 0:
            raise ValueError("ping_timeout must be positive")
        self._client = client
        self._ping_timeout = ping_timeout
        self._prefix = key_prefix
        self._max_age = max_age
        self._metrics = metrics
        self._now = now or (lambda: datetime.now(UTC))
        self._owns_client = owns_client

    @classmethod
    def from_config(
        cls,
        config: RedisSection,
        *,
        metrics: WorkerMetrics | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> RedisPriceSource:
        """Client from config: URL (redis:// or rediss://) or host/port, password and TLS."""
        return cls(
            redis_client(config),
            key_prefix=config.key_prefix,
            max_age=timedelta(seconds=config.price_max_age),
            metrics=metrics,
            now=now,
            ping_timeout=config.socket_timeout,
        )

    def key(self, symbol: str) -> str:
        return f"{self._prefix}{symbol}"

    async def get_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """Fresh, valid prices for the symbols that have one; others are left out.

        Raises TransientError when Redis is unreachable (the monitor skips that cycle).
        """
        unique = list(dict.fromkeys(symbols))
        if not unique:
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for symbol in unique:
                    pipe.hmget(self.key(symbol), ["price", "ts"])
                rows = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise TransientError(f"redis price read failed: {type(exc).__name__}") from exc
        oldest = self._now() - self._max_age
        prices: dict[str, Decimal] = {}
        for symbol, row in zip(unique, rows, strict=True):
            raw_price, raw_ts = (
                row if isinstance(row, list | tuple) and len(row) == 2 else (None, None)
            )
            if raw_price is None and raw_ts is None:
                continue  # no price published for this symbol: not an error
            price = parse_price(raw_price)
            if price is None:
                self._skip(symbol, "malformed")
                continue
            traded_at = parse_timestamp(raw_ts)
            if traded_at is None:
                self._skip(symbol, "malformed_ts")
                continue
            if traded_at < oldest:
                self._skip(symbol, "stale")
                continue
            prices[symbol] = price
        return prices

    def _skip(self, symbol: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.prices_skipped.labels(reason=reason).inc()
        _log.warning("price skipped", symbol=symbol[:32], reason=reason)

    async def ping(self) -> bool:
        """Readiness: True when Redis answers a PING within `ping_timeout` seconds.

        Never raises and never takes longer than `ping_timeout` (the client's own retries on
        a dead or frozen server could take several socket timeouts)."""
        try:
            async with asyncio.timeout(self._ping_timeout):
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


async def write_price(
    client: aioredis.Redis,
    symbol: str,
    price: Decimal,
    at: datetime,
    *,
    key_prefix: str = "prices:",
    channel: str | None = None,
) -> None:
    """Write one price in the documented format (for tools, paper feeds and tests); with a
    `channel`, then announce the symbol on it, as the market-data side does."""
    if at.tzinfo is None:
        raise ValueError("price timestamps must be timezone-aware")
    key = f"{key_prefix}{symbol}"
    fields: dict[FieldT, EncodableT] = {
        "price": format(price, "f"),
        "ts": at.astimezone(UTC).isoformat(),
    }
    if channel is None:
        await client.hset(key, mapping=fields)
        return
    # One round trip; Redis runs them in order, so a subscriber reads the new hash.
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.publish(channel, symbol)
        await pipe.execute()
