"""Running the API: `strategy-worker api` (production) and `serve_dashboard` (paper mode).

`api_service` is the one wiring: an asyncpg pool with the project's JSONB codec, the read
model, the control publisher (signer + sink), the stream hub over a follower, and uvicorn
serving the app (TLS from `api.tls`). Everything it opened is closed on the way out, in
reverse order, also when start-up fails halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import uvicorn

from strategy_worker.adapters.postgres import migrate
from strategy_worker.adapters.redis_prices import RedisPriceSource
from strategy_worker.api.app import ApiContext, create_app
from strategy_worker.api.controls import ControlPublisher, ControlSink, KafkaControlSink
from strategy_worker.api.followers import EventFollower, KafkaFollower, OutboxFollower
from strategy_worker.api.reads import ReadModel, init_connection
from strategy_worker.api.stream import StreamHub
from strategy_worker.auth.control import control_signer_from
from strategy_worker.auth.tokens import dev_signing_key, issue_token, token_verifier_from
from strategy_worker.config import WorkerConfig
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.log import get_logger
from strategy_worker.ports import PriceSource

_log = get_logger(__name__)


_UVICORN_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False}},
}


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class RunningApi:
    """A serving API: where it listens, and its hub (tests and benchmarks read it)."""

    url: str
    port: int
    hub: StreamHub | None


@contextlib.asynccontextmanager
async def api_service(
    config: WorkerConfig,
    *,
    dsn: str | None = None,
    follower: EventFollower | None = None,
    control_sink: ControlSink | None = None,
    prices: PriceSource | None = None,
    host: str | None = None,
    port: int | None = None,
    migrate_first: bool = True,
    stream_source: Literal["kafka", "outbox"] | None = None,
) -> AsyncIterator[RunningApi]:
    """Serve the API until the context exits. Omitted parts come from `config`: the
    database, the follower (`api.stream.source`), the Kafka control sink, Redis marks.
    `port=0` binds a free port (see `RunningApi.port`)."""
    api = config.api
    dsn = dsn or config.database.dsn()
    verifier = token_verifier_from(config)
    signer = control_signer_from(config)
    async with contextlib.AsyncExitStack() as stack:
        if migrate_first:
            await migrate(dsn, hint=config.database.setting_hint())
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=config.database.pool_max_size, init=init_connection
        )
        stack.push_async_callback(pool.close)
        source = stream_source or api.stream.source
        if follower is None:
            if source == "kafka":
                follower = KafkaFollower(config.kafka)
            else:
                follower = OutboxFollower(pool, poll_interval=api.stream.outbox_poll_interval)
        if control_sink is None:
            control_sink = await _kafka_sink(config, stack)
        if prices is None and source == "kafka":
            redis_prices = RedisPriceSource.from_config(config.redis)
            stack.push_async_callback(redis_prices.close)
            prices = redis_prices
        hub = StreamHub(
            follower,
            buffer_events=api.stream.buffer_events,
            client_queue=api.stream.client_queue,
            heartbeat_s=api.stream.heartbeat,
        )
        await hub.start()
        stack.push_async_callback(hub.close)
        ctx = ApiContext(
            reads=ReadModel(pool),
            controls=ControlPublisher(pool, control_sink, signer),
            hub=hub,
            verifier=verifier,
            worker_limits=_limits(config),
            prices=prices,
            default_page_size=api.default_page_size,
            max_page_size=api.max_page_size,
        )
        bind_host = host or api.host
        sock = _bind(bind_host, api.port if port is None else port)
        server = _EmbeddedServer(
            uvicorn.Config(
                create_app(ctx),
                # uvicorn's lines go to our structlog handler (JSON, redacted); its access
                # log stays off whatever handlers a host process installs.
                log_config=_UVICORN_LOGGING,
                access_log=False,
                lifespan="off",
                ws="websockets-sansio",
                ws_ping_interval=20,
                ws_per_message_deflate=False,
                timeout_graceful_shutdown=5,
                ssl_certfile=str(api.tls.cert_file) if api.tls.cert_file else None,
                ssl_keyfile=str(api.tls.key_file) if api.tls.key_file else None,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")

        async def stop_server() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sock.close()

        stack.push_async_callback(stop_server)
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the API server stopped during start-up")
            await asyncio.sleep(0.02)
        bound = sock.getsockname()[1]
        scheme = "https" if api.tls.cert_file else "http"
        shown = "127.0.0.1" if bind_host in ("0.0.0.0", "") else bind_host
        url = f"{scheme}://{shown}:{bound}"
        _log.info("api serving", url=url, stream=follower.name, signing=signer is not None)
        yield RunningApi(url=url, port=bound, hub=hub)


def _limits(config: WorkerConfig) -> RiskLimits:
    """The worker's limits as this config states them (the runtime's own mapping; imported
    here, not at the top, so the runtime may import this module without a cycle)."""
    from strategy_worker.runtime.settings import risk_limits_from

    return risk_limits_from(config.risk)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _kafka_sink(config: WorkerConfig, stack: contextlib.AsyncExitStack) -> ControlSink:
    from strategy_worker.adapters.kafka.producer import KafkaProducer

    producer = KafkaProducer(config.kafka, client_id=f"{config.kafka.client_id}-api")
    await producer.start()
    stack.push_async_callback(producer.stop)
    return KafkaControlSink(producer, config.kafka.topics.control)


async def run_api(config: WorkerConfig, *, stop: asyncio.Event | None = None) -> int:
    """`strategy-worker api`: serve until SIGTERM/SIGINT (or `stop`); the exit code."""
    import signal

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with api_service(config):
        await stop.wait()
    return 0


# --------------------------------------------------------------------------- paper mode


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The dashboard serving in-process: open `link` (the URL with a development token)."""

    url: str
    token: str
    user_id: uuid.UUID

    @property
    def link(self) -> str:
        # The token rides in the fragment: browsers never send it, so no log sees it.
        return f"{self.url}/#token={self.token}"


@contextlib.asynccontextmanager
async def serve_dashboard(
    config: WorkerConfig,
    dsn: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    follower: EventFollower | None = None,
    control_sink: ControlSink | None = None,
    prices: PriceSource | None = None,
    token_ttl: timedelta = timedelta(hours=12),
) -> AsyncIterator[Dashboard]:
    """Paper mode's dashboard on loopback, with an operator development token.

    `follower` defaults to the outbox of `dsn` (paper mode has no Kafka); `control_sink`
    receives the dashboard's control messages (paper mode: one that hands them to its
    worker's control handling), without one the buttons answer 503. Development keys
    (`.dev-keys/`) sign the token, so `config.environment` must be development.
    """
    async with api_service(
        config,
        dsn=dsn,
        follower=follower,
        control_sink=control_sink or _NoSink(),
        prices=prices,
        host=host,
        port=port,
        migrate_first=False,
        stream_source="outbox",
    ) as running:
        user = uuid.UUID(int=0)
        token = issue_token(
            user_id=user,
            operator=True,
            key=dev_signing_key(config),
            algorithm=config.api.auth.algorithm,
            now=datetime.now(UTC),
            ttl_s=token_ttl.total_seconds(),
            issuer=config.api.auth.issuer,
            audience=config.api.auth.audience,
            roles_claim=config.api.auth.roles_claim,
            operator_role=config.api.auth.operator_role,
        )
        yield Dashboard(url=running.url, token=token, user_id=user)


class _NoSink:
    """No control path: every action fails with a clear message (503)."""

    async def publish(self, messages: object) -> None:
        from strategy_worker.api.controls import ControlUnavailable

        raise ControlUnavailable("this dashboard has no control path")
