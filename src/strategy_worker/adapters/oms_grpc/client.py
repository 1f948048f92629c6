"""The OMS gRPC client (ports.OmsGateway): one channel, deadlines, retries, a circuit breaker.

Every call gets a deadline of `timeout` seconds. Only retryable status codes are retried,
with capped exponential backoff and full jitter, and a resubmission always carries the same
client order id: the OMS is idempotent on it, so a retry after DEADLINE_EXCEEDED (when the
first attempt may have landed) returns the existing order instead of creating a second.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TypeVar

import grpc
import structlog
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.adapters.oms_grpc.breaker import BreakerState, CircuitBreaker
from strategy_worker.adapters.oms_grpc.config import OmsClientConfig, TlsConfig
from strategy_worker.adapters.oms_grpc.metrics import OmsClientMetrics
from strategy_worker.adapters.retry import Backoff, retry_async
from strategy_worker.domain.orders import (
    ExecutionReport,
    OmsCapabilities,
    OmsOrder,
    OrderIntent,
)
from strategy_worker.errors import CircuitOpenError, ConfigError, OmsError
from strategy_worker.proto.aipx.oms.v1 import oms_pb2 as pb
from strategy_worker.proto.aipx.oms.v1 import oms_pb2_grpc as pb_grpc

T = TypeVar("T")

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_RECONNECT_CEILING_MS = 3000
"""The longest wait between two connection attempts to an OMS that is away (one TCP connect
per 3 s costs nothing; waiting longer delays everything after its return)."""
# A report stream reconnects forever; its backoff ceiling stops doubling after this many.
_MAX_STREAM_BACKOFF_STEP = 30

log = structlog.get_logger(__name__)


class OmsCallError(OmsError):
    """An OMS call failed with a gRPC status; `code` is its name (e.g. "UNAVAILABLE")."""

    def __init__(self, message: str, *, method: str, code: str, retryable: bool) -> None:
        super().__init__(message, retryable=retryable)
        self.method = method
        self.code = code


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE_CODES


class OmsGrpcClient:
    """ports.OmsGateway over gRPC. Create it inside the event loop; `close()` it at shutdown."""

    def __init__(
        self,
        config: OmsClientConfig,
        *,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._metrics = OmsClientMetrics.for_registry(registry)
        self._breaker = CircuitBreaker(
            failure_threshold=config.breaker.failure_threshold,
            reset_timeout_s=config.breaker.reset_timeout_s,
            name=f"OMS {config.target}",
            monotonic=monotonic,
            on_state_change=lambda state: self._metrics.breaker_state.set(int(state)),
        )
        self._metrics.breaker_state.set(int(self._breaker.state))
        self._backoff = Backoff.from_ms(config.retry.backoff_ms, config.retry.max_backoff_ms)
        self._rng = rng
        self._sleep = sleep
        self._channel = _make_channel(config)
        self._stub = pb_grpc.OrderManagementServiceStub(self._channel)
        self._closed = False

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def metrics(self) -> OmsClientMetrics:
        return self._metrics

    # -- OmsGateway ------------------------------------------------------------------------

    async def submit(self, intent: OrderIntent, *, account_id: str) -> OmsOrder:
        request = pb.SubmitOrderRequest(
            order=codec.new_order_from_intent(intent, account_id=account_id)
        )
        response = await self._call(
            "SubmitOrder", lambda timeout: self._stub.SubmitOrder(request, timeout=timeout)
        )
        return codec.order_from_pb(response.order)

    async def submit_many(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        """Submit over the bidirectional stream; a retry resends only unanswered orders."""
        if not intents:
            return []
        pending = {
            intent.client_order_id: codec.new_order_from_intent(intent, account_id=account_id)
            for intent in intents
        }
        results: dict[str, OmsOrder] = {}
        refused: dict[str, pb.Error] = {}

        async def attempt(deadline_s: float) -> None:
            todo = [
                order for cid, order in pending.items() if cid not in results and cid not in refused
            ]

            async def requests() -> AsyncIterator[pb.SubmitOrderRequest]:
                for order in todo:
                    yield pb.SubmitOrderRequest(order=order)

            call = self._stub.SubmitOrders(requests(), timeout=deadline_s)
            try:
                async for response in call:
                    cid = response.client_order_id
                    if response.HasField("error"):
                        refused[cid] = response.error
                    else:
                        results[cid] = codec.order_from_pb(response.order)
            finally:
                call.cancel()

        await self._call("SubmitOrders", attempt)
        if refused:
            cid, error = next(iter(refused.items()))
            raise OmsCallError(
                f"OMS refused {len(refused)} of {len(pending)} orders; first {cid}: "
                f"{error.code}: {error.message}",
                method="SubmitOrders",
                code=error.code,
                retryable=False,
            )
        missing = [cid for cid in pending if cid not in results]
        if missing:
            raise OmsCallError(
                f"OMS answered no result for {len(missing)} orders (first {missing[0]})",
                method="SubmitOrders",
                code="DATA_LOSS",
                retryable=True,
            )
        return [results[intent.client_order_id] for intent in intents]

    async def submit_group(
        self, intents: Sequence[OrderIntent], *, account_id: str
    ) -> list[OmsOrder]:
        """Submit orders atomically (a bracket, an OCO group; contract 1.1): the OMS accepts
        all or none. Idempotent like `submit`: a retry returns the orders already held."""
        if not intents:
            return []
        request = pb.SubmitOrderGroupRequest(
            orders=[codec.new_order_from_intent(i, account_id=account_id) for i in intents]
        )
        response = await self._call(
            "SubmitOrderGroup",
            lambda timeout: self._stub.SubmitOrderGroup(request, timeout=timeout),
        )
        return [codec.order_from_pb(order) for order in response.orders]

    async def capabilities(self) -> OmsCapabilities:
        """What the OMS holds natively (GetCapabilities). A contract 1.0 OMS answers
        UNIMPLEMENTED: that is `OmsCapabilities.baseline()` (MARKET and LIMIT, no groups),
        not an error. Transient failures are retried, then raised like any call."""
        try:
            response = await self._call(
                "GetCapabilities",
                lambda timeout: self._stub.GetCapabilities(
                    pb.GetCapabilitiesRequest(), timeout=timeout
                ),
            )
        except OmsCallError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED.name:
                return OmsCapabilities.baseline()
            raise
        return codec.capabilities_from_pb(response)

    async def cancel(self, client_order_id: str) -> OmsOrder:
        request = pb.CancelOrderRequest(client_order_id=client_order_id)
        response = await self._call(
            "CancelOrder", lambda timeout: self._stub.CancelOrder(request, timeout=timeout)
        )
        return codec.order_from_pb(response.order)

    async def get_order(self, client_order_id: str) -> OmsOrder | None:
        return await self._get_order(pb.GetOrderRequest(client_order_id=client_order_id))

    async def get_order_by_oms_id(self, oms_order_id: str) -> OmsOrder | None:
        return await self._get_order(pb.GetOrderRequest(oms_order_id=oms_order_id))

    async def list_orders(self, execution_id: uuid.UUID) -> list[OmsOrder]:
        request = pb.ListOrdersRequest(execution_id=str(execution_id))
        response = await self._call(
            "ListOrders", lambda timeout: self._stub.ListOrders(request, timeout=timeout)
        )
        return [codec.order_from_pb(order) for order in response.orders]

    async def get_positions(self, execution_id: uuid.UUID) -> dict[str, Decimal]:
        response = await self.get_position_book(execution_id=execution_id)
        return {
            position.symbol: codec.parse_decimal(position.quantity, "position.quantity")
            for position in response.positions
        }

    async def get_position_book(
        self, *, execution_id: uuid.UUID | None = None, account_id: str | None = None
    ) -> pb.GetPositionsResponse:
        """The full positions answer (quantities, notionals, fees, cash) of one scope."""
        if execution_id is not None and account_id is None:
            request = pb.GetPositionsRequest(execution_id=str(execution_id))
        elif account_id is not None and execution_id is None:
            request = pb.GetPositionsRequest(account_id=account_id)
        else:
            raise ValueError("give exactly one of execution_id and account_id")
        return await self._call(
            "GetPositions", lambda timeout: self._stub.GetPositions(request, timeout=timeout)
        )

    def reports(self, *, from_seq: int) -> AsyncIterator[ExecutionReport]:
        return self._reports(from_seq)

    async def ping(self) -> bool:
        """True when the OMS answers within the timeout; never raises, never retries. A
        serving answer closes an open breaker: the OMS is back, so orders need not wait out
        the breaker's reset timeout (readiness and order flow agree)."""
        try:
            response = await self._stub.Ping(pb.PingRequest(), timeout=self._config.timeout)
        except grpc.aio.AioRpcError as exc:
            self._metrics.calls.labels("Ping", exc.code().name).inc()
            return False
        self._metrics.calls.labels("Ping", "OK").inc()
        serving = response.status == pb.PingResponse.SERVING_STATUS_SERVING
        if serving and self._breaker.state is not BreakerState.CLOSED:
            log.info("the OMS answers a ping: breaker closed", was=self._breaker.state.name)
            self._breaker.record_success()
        return serving

    async def close(self) -> None:
        """Close the channel (idempotent); open report streams end."""
        if self._closed:
            return
        self._closed = True
        await self._channel.close(grace=None)

    async def __aenter__(self) -> OmsGrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------

    async def _get_order(self, request: pb.GetOrderRequest) -> OmsOrder | None:
        try:
            response = await self._call(
                "GetOrder", lambda timeout: self._stub.GetOrder(request, timeout=timeout)
            )
        except OmsCallError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND.name:
                return None
            raise
        return codec.order_from_pb(response.order)

    async def _call(self, method: str, send: Callable[[float], Awaitable[T]]) -> T:
        """One logical call: breaker check, deadline per attempt, retries, metrics."""
        timeout = self._config.timeout
        metrics = self._metrics

        async def attempt() -> T:
            self._breaker.before_call()
            started = time.perf_counter()
            try:
                result = await send(timeout)
            except grpc.aio.AioRpcError as exc:
                metrics.latency.labels(method).observe(time.perf_counter() - started)
                metrics.calls.labels(method, exc.code().name).inc()
                if exc.code() in RETRYABLE_CODES:
                    self._breaker.record_failure()
                else:
                    # The OMS answered (e.g. NOT_FOUND): the connection is healthy.
                    self._breaker.record_success()
                raise
            except BaseException:
                self._breaker.release()
                raise
            metrics.latency.labels(method).observe(time.perf_counter() - started)
            metrics.calls.labels(method, "OK").inc()
            self._breaker.record_success()
            return result

        def on_retry(number: int, exc: BaseException, delay: float) -> None:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            metrics.retries.labels(method, code).inc()
            log.warning(
                "oms_client.retry", method=method, code=code, retry=number, delay_s=round(delay, 3)
            )

        try:
            return await retry_async(
                attempt,
                max_attempts=self._config.retry.max_attempts,
                backoff=self._backoff,
                is_retryable=is_retryable,
                on_retry=on_retry,
                sleep=self._sleep,
                rng=self._rng,
            )
        except CircuitOpenError:
            metrics.failures.labels(method, "CIRCUIT_OPEN").inc()
            raise
        except grpc.aio.AioRpcError as exc:
            metrics.failures.labels(method, exc.code().name).inc()
            raise self._error(method, exc) from exc

    def _error(self, method: str, exc: grpc.aio.AioRpcError) -> OmsCallError:
        code = exc.code()
        retryable = code in RETRYABLE_CODES
        message = f"OMS {method} failed: {code.name}: {exc.details()}"
        if retryable:
            message += f" (after {self._config.retry.max_attempts} attempts)"
        if code is grpc.StatusCode.UNAVAILABLE:
            tls = "on" if self._config.tls.enabled else "off"
            message += (
                f"; is the OMS up at {self._config.target}, and does oms_grpc.tls "
                f"(now {tls}) match the server's TLS setting and certificates?"
            )
        return OmsCallError(message, method=method, code=code.name, retryable=retryable)

    async def _reports(self, from_seq: int) -> AsyncIterator[ExecutionReport]:
        """Report stream that reconnects after failures, resuming after the last seq seen."""
        last = from_seq
        failures = 0
        while not self._closed:
            call = self._stub.StreamExecutionReports(
                pb.StreamExecutionReportsRequest(from_seq=last)
            )
            try:
                async for message in call:
                    if message.seq <= last:
                        continue  # never hand out a report twice
                    report = codec.report_from_pb(message)
                    last = message.seq
                    failures = 0
                    yield report
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if exc.code() not in RETRYABLE_CODES and exc.code() != grpc.StatusCode.CANCELLED:
                    raise self._error("StreamExecutionReports", exc) from exc
                log.warning("oms_client.report_stream_lost", code=exc.code().name, last_seq=last)
            finally:
                call.cancel()
            if self._closed:
                return
            failures += 1
            self._metrics.stream_reconnects.inc()
            await self._sleep(
                self._backoff.delay(min(failures, _MAX_STREAM_BACKOFF_STEP), self._rng)
            )


def _make_channel(config: OmsClientConfig) -> grpc.aio.Channel:
    """One channel for the client's life; reconnects start at the retry backoff and grow to
    at most `_RECONNECT_CEILING_MS`, so an OMS that comes back is connected within seconds
    (a 30 s ceiling kept /ready at 503 and orders waiting long after it returned)."""
    first = max(min(config.retry.backoff_ms, _RECONNECT_CEILING_MS), 10)
    ceiling = max(min(config.retry.max_backoff_ms, _RECONNECT_CEILING_MS), first)
    options: list[tuple[str, int | str]] = [
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.min_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", ceiling),
        # Detect a dead connection under a long-lived report stream.
        ("grpc.keepalive_time_ms", 120_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    if not config.tls.enabled:
        return grpc.aio.insecure_channel(config.target, options=options)
    if config.tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name))
    return grpc.aio.secure_channel(config.target, _credentials(config.tls), options=options)


def _credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    def read(path: object) -> bytes | None:
        if path is None:
            return None
        try:
            with open(str(path), "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise ConfigError(f"oms_grpc.tls: cannot read {path}: {exc}") from exc

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca_file),
        private_key=read(tls.key_file),
        certificate_chain=read(tls.cert_file),
    )
