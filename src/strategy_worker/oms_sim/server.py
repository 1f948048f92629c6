"""The paper OMS server: grpc.aio around the venue, a price ticker, start/stop/serve_forever."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from types import TracebackType
from typing import Protocol

import grpc
import structlog

from strategy_worker.domain.orders import OrderType
from strategy_worker.errors import ConfigError
from strategy_worker.oms_sim.batches import BatchLimits
from strategy_worker.oms_sim.config import OmsSimConfig, PricesConfig, ServerTlsConfig
from strategy_worker.oms_sim.faults import FaultSwitches
from strategy_worker.oms_sim.prices import RandomWalkPrices, ReplayPrices
from strategy_worker.oms_sim.service import OmsSimService
from strategy_worker.oms_sim.venue import PaperVenue, VenueRules
from strategy_worker.ports import PriceSource
from strategy_worker.proto.aipx.oms.v1 import oms_pb2_grpc as pb_grpc
from strategy_worker.runtime.clocks import SystemClock

log = structlog.get_logger(__name__)


class Clock(Protocol):
    def now(self) -> datetime: ...


def venue_for(config: OmsSimConfig) -> PaperVenue:
    """A fresh venue with the configuration's fill, fee and rejection rules."""
    return PaperVenue(
        VenueRules(
            slippage_bps=config.slippage_bps,
            fee_bps=config.fee_bps,
            fee_per_share=config.fee_per_share,
            partial_fill_slices=config.partial_fill_slices,
            rejection_rate=config.rejection_rate,
            initial_cash=config.initial_cash,
            native_types=native_types(config),
            contingent=config.native_protection,
        ),
        seed=config.seed,
    )


def native_types(config: OmsSimConfig) -> frozenset[OrderType]:
    """The order types the configured venue holds natively (MARKET and LIMIT always)."""
    if not config.native_protection:
        return frozenset({OrderType.MARKET, OrderType.LIMIT})
    return frozenset(OrderType) - {OrderType(name) for name in config.unsupported_order_types}


def prices_for(config: PricesConfig, clock: Clock) -> PriceSource:
    """The price source the configuration names, advancing with `clock`."""
    if config.kind == "replay":
        assert config.file is not None  # validated by PricesConfig
        return ReplayPrices(config.file, clock=clock)
    return RandomWalkPrices(
        seed=config.seed,
        start_prices=config.start_prices,
        volatility=config.volatility,
        clock=clock,
        step_s=config.step_s,
        strict=config.strict,
    )


class OmsSimServer:
    """The paper OMS on a port. Restartable: `stop()` then `start()` keeps the venue's state
    and the port, which is how tests take the OMS down and bring it back."""

    def __init__(
        self,
        config: OmsSimConfig,
        *,
        prices: PriceSource | None = None,
        clock: Clock | None = None,
        venue: PaperVenue | None = None,
        faults: FaultSwitches | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.prices = prices or prices_for(config.prices, self.clock)
        self.venue = venue or venue_for(config)
        self.faults = faults or FaultSwitches()
        self.service = OmsSimService(
            venue=self.venue,
            prices=self.prices,
            faults=self.faults,
            now=self.clock.now,
            latency_s=config.latency_ms / 1000,
            batch_limits=BatchLimits(config.max_batch_orders, config.max_batches_in_flight)
            if config.order_batches
            else None,
            report_batches=config.report_batches,
        )
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._port = config.port
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (the same one again after a restart)."""
        if self._server is not None:
            return self._port
        server = grpc.aio.server()
        pb_grpc.add_OrderManagementServiceServicer_to_server(self.service, server)
        target = f"{self.config.host}:{self._port}"
        if self.config.tls.enabled:
            port = server.add_secure_port(target, _server_credentials(self.config.tls))
        else:
            port = server.add_insecure_port(target)
        if port == 0:
            raise ConfigError(f"oms-sim: cannot bind {target}")
        await server.start()
        self._server = server
        self._stopped.clear()
        self._port = port
        self._ticker = asyncio.create_task(self._tick_forever(), name="oms-sim-ticker")
        log.info("oms_sim.started", address=self.address, tls=self.config.tls.enabled)
        return port

    async def stop(self, grace: float | None = 0.5) -> None:
        """Stop serving (idempotent): end the ticker, then cancel in-flight calls after `grace`."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
            log.info("oms_sim.stopped", address=self.address)
        self._stopped.set()

    async def tick(self) -> int:
        """Match every working order against fresh prices now; returns the number of fills."""
        symbols = self.venue.working_symbols()
        if not symbols:
            return 0
        prices = await self.prices.get_prices(symbols)
        fills = self.venue.on_prices(prices, now=self.clock.now())
        if fills:
            self.service.notifier.notify()
        return fills

    async def wait_closed(self) -> None:
        """Return once `stop()` ran. (Not grpc's wait_for_termination: cancelling that one
        breaks a later server.stop() with CancelledError in grpcio 1.85.)"""
        if self._server is not None:
            await self._stopped.wait()

    async def __aenter__(self) -> OmsSimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            try:
                await self.tick()
            except Exception:
                # A failing price source must not kill the venue: log it and try next tick.
                log.exception("oms_sim.tick_failed")


async def serve_forever(config: OmsSimConfig) -> None:
    """Run the paper OMS until cancelled (the `strategy-worker oms-sim` command)."""
    server = OmsSimServer(config)
    try:
        await server.start()
        await server.wait_closed()
    finally:
        await server.stop()
        await server.prices.close()


def _server_credentials(tls: ServerTlsConfig) -> grpc.ServerCredentials:
    assert tls.cert_file is not None  # validated by ServerTlsConfig
    assert tls.key_file is not None
    try:
        key = tls.key_file.read_bytes()
        cert = tls.cert_file.read_bytes()
        client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    except OSError as exc:
        raise ConfigError(f"oms-sim: cannot read TLS files: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
