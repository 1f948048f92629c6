"""The OMS gRPC client (ports.OmsGateway): one channel, deadlines, retries, a circuit breaker.

Every call gets a deadline of `timeout` seconds. Only retryable status codes are retried,
with capped exponential backoff and full jitter, and a resubmission always carries the same
client order id: the OMS is idempotent on it, so a retry after DEADLINE_EXCEEDED (when the
first attempt may have landed) returns the existing order instead of creating a second.

Submissions share ONE long-lived SubmitOrders stream (`stream.SubmitStream`): batches of
contract 1.2 where the OMS announces them (GetCapabilities, asked once), single orders on
the same stream otherwise. Reports arrive batched (StreamExecutionReportBatches) where the
OMS serves that, one per message otherwise; either way `reports()` yields them one by one.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import grpc
import structlog
from prometheus_client import CollectorRegistry

from strategy_worker.adapters.oms_grpc import codec
from strategy_worker.adapters.oms_grpc.breaker import BreakerState, CircuitBreaker
from strategy_worker.adapters.oms_grpc.config import OmsClientConfig, TlsConfig
from strategy_worker.adapters.oms_grpc.metrics import OmsClientMetrics
from strategy_worker.adapters.oms_grpc.stream import SubmitStream
from strategy_worker.adapters.retry import Backoff, retry_async
from strategy_worker.domain.orders import (
    ExecutionReport,
    OmsCapabilities,
    OmsOrder,
    OrderIntent,
)
from strategy_worker.errors import CircuitOpenError, ConfigError, OmsError
from strategy_worker.ports import SubmitEntry, SubmitOutcome
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
_ORDERS_IN_FLIGHT = 256
"""Single orders unanswered at once on the shared stream (the per-order path)."""

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
        self._caps: OmsCapabilities | None = None
        """GetCapabilities as first answered (asked again after the OMS refused a batch)."""
        self._stream: SubmitStream | None = None

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def metrics(self) -> OmsClientMetrics:
        return self._metrics

    @property
    def submit_streams_opened(self) -> int:
        """SubmitOrders streams opened so far: 1 plus one per reopening after a failure."""
        return 0 if self._stream is None else self._stream.opened

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
        """Submit over the shared stream (see `submit_batch`); raises OmsCallError (not
        retryable) when the OMS refused any of them."""
        outcomes = await self.submit_batch([SubmitEntry((i,), account_id) for i in intents])
        refused = [(i, o.error) for i, o in zip(intents, outcomes, strict=True) if o.error]
        if refused:
            intent, error = refused[0]
            raise OmsCallError(
                f"OMS refused {len(refused)} of {len(intents)} orders; first "
                f"{intent.client_order_id}: {error}",
                method="SubmitOrders",
                code=getattr(error, "code", "UNKNOWN"),
                retryable=False,
            )
        return [o.orders[0] for o in outcomes]

    async def submit_batch(self, entries: Sequence[SubmitEntry]) -> list[SubmitOutcome]:
        """Orders and groups of any executions on the shared stream: in OrderBatch requests
        of at most the OMS's `max_batch_orders` (contract 1.2) where it takes them, else
        one request per order (groups then by SubmitOrderGroup). A retry resends what was
        not answered, under the same client order ids."""
        if not entries:
            return []
        caps = await self._submit_caps()
        if caps.order_batches:
            try:
                return await self._submit_batches(entries, caps)
            except _BatchesRefused:
                # The OMS no longer takes batches (replaced by a 1.1 one): ask again.
                self._caps = None
                caps = await self._submit_caps()
                if caps.order_batches:
                    raise OmsCallError(
                        "OMS refused a batch although GetCapabilities announces batches",
                        method="SubmitOrders",
                        code=grpc.StatusCode.INVALID_ARGUMENT.name,
                        retryable=False,
                    ) from None
        return await self._submit_singly(entries, caps)

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
        if self._stream is not None:
            await self._stream.close()
        await self._channel.close(grace=None)

    async def __aenter__(self) -> OmsGrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------

    async def _submit_caps(self) -> OmsCapabilities:
        if self._caps is None:
            self._caps = await self.capabilities()
        return self._caps

    def _submit_stream(self, caps: OmsCapabilities) -> SubmitStream:
        """The shared stream, opened with the OMS's batch window the first time."""
        if self._stream is None:
            self._stream = SubmitStream(
                lambda: self._stub.SubmitOrders(None),
                max_batches=caps.max_batches_in_flight or 1,
                max_orders=_ORDERS_IN_FLIGHT,
            )
        return self._stream

    async def _submit_batches(
        self, entries: Sequence[SubmitEntry], caps: OmsCapabilities
    ) -> list[SubmitOutcome]:
        stream = self._submit_stream(caps)
        chunks = _chunks(entries, caps.max_batch_orders)

        async def one(chunk: list[tuple[int, SubmitEntry]]) -> list[SubmitOutcome]:
            wire = [_entry_to_pb(entry) for _, entry in chunk]
            try:
                ack = await self._call(
                    "SubmitOrders", lambda deadline_s: stream.batch(wire, deadline_s=deadline_s)
                )
            except OmsCallError:
                self._caps = None  # ask again next time: it may be another OMS by then
                raise
            return _outcomes([e for _, e in chunk], ack)

        if len(chunks) == 1:
            return await one(chunks[0])
        results = await asyncio.gather(*(one(c) for c in chunks))
        return [outcome for part in results for outcome in part]

    async def _submit_singly(
        self, entries: Sequence[SubmitEntry], caps: OmsCapabilities
    ) -> list[SubmitOutcome]:
        """The per-order path (a 1.0/1.1 OMS): every order its own request on the shared
        stream; a retry resends only the unanswered ones; groups by SubmitOrderGroup."""
        stream = self._submit_stream(caps)
        results: dict[int, SubmitOutcome] = {}
        singles = {
            i: codec.new_order_from_intent(e.intents[0], account_id=e.account_id)
            for i, e in enumerate(entries)
            if not e.group
        }

        async def attempt(deadline_s: float) -> None:
            todo = [(i, order) for i, order in singles.items() if i not in results]
            answers = await asyncio.gather(
                *(stream.order(order, deadline_s=deadline_s) for _, order in todo),
                return_exceptions=True,
            )
            failure: BaseException | None = None
            for (i, _), answer in zip(todo, answers, strict=True):
                if isinstance(answer, BaseException):
                    failure = failure or answer
                else:
                    results[i] = _order_outcome(answer)
            if failure is not None:
                raise failure

        if singles:
            await self._call("SubmitOrders", attempt)
        for i, entry in enumerate(entries):
            if entry.group:
                results[i] = await self._group_outcome(entry, caps)
        return [results[i] for i in range(len(entries))]

    async def _group_outcome(self, entry: SubmitEntry, caps: OmsCapabilities) -> SubmitOutcome:
        if not caps.order_groups:
            return SubmitOutcome(
                error=OmsCallError(
                    "this OMS holds no order groups (GetCapabilities)",
                    method="SubmitOrderGroup",
                    code=grpc.StatusCode.INVALID_ARGUMENT.name,
                    retryable=False,
                )
            )
        try:
            orders = await self.submit_group(entry.intents, account_id=entry.account_id)
        except OmsCallError as exc:
            if exc.retryable:
                raise
            return SubmitOutcome(error=exc)
        return SubmitOutcome(orders=tuple(orders))

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
        """Report stream that reconnects after failures, resuming after the last seq seen;
        batched (contract 1.2) where the OMS serves that, decoded a message at a time."""
        last = from_seq
        failures = 0
        batched: bool | None = None  # unknown until the OMS said (asked at each connect)
        while not self._closed:
            if batched is None:
                batched = await self._serves_report_batches()
            request = pb.StreamExecutionReportsRequest(from_seq=last)
            call: Any = (
                self._stub.StreamExecutionReportBatches(request)
                if batched
                else self._stub.StreamExecutionReports(request)
            )
            try:
                async for message in call:
                    chunk = message.reports if batched else (message,)
                    reports = [codec.report_from_pb(m) for m in chunk if m.seq > last]
                    for report in reports:  # never hand out a report twice
                        last = report.seq
                        failures = 0
                        yield report
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if batched and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    batched = False  # an OMS without the batched stream after all
                    continue
                if exc.code() not in RETRYABLE_CODES and exc.code() != grpc.StatusCode.CANCELLED:
                    raise self._error("StreamExecutionReports", exc) from exc
                log.warning("oms_client.report_stream_lost", code=exc.code().name, last_seq=last)
                batched = None  # the OMS may be another one when it is back
            finally:
                call.cancel()
            if self._closed:
                return
            failures += 1
            self._metrics.stream_reconnects.inc()
            await self._sleep(
                self._backoff.delay(min(failures, _MAX_STREAM_BACKOFF_STEP), self._rng)
            )

    async def _serves_report_batches(self) -> bool:
        """Whether the OMS serves StreamExecutionReportBatches; False when it cannot say
        now (the per-report stream then fails or works on its own)."""
        try:
            response = await self._stub.GetCapabilities(
                pb.GetCapabilitiesRequest(), timeout=self._config.timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.report_batches)


class _BatchesRefused(Exception):
    """The OMS refused an OrderBatch as such: it takes none (any more)."""


def _chunks(entries: Sequence[SubmitEntry], max_orders: int) -> list[list[tuple[int, SubmitEntry]]]:
    """Consecutive entries in chunks of at most `max_orders` orders (an entry is never
    split; one larger than that goes alone and the OMS refuses it)."""
    chunks: list[list[tuple[int, SubmitEntry]]] = [[]]
    size = 0
    for i, entry in enumerate(entries):
        n = len(entry.intents)
        if chunks[-1] and size + n > max_orders:
            chunks.append([])
            size = 0
        chunks[-1].append((i, entry))
        size += n
    return chunks


def _entry_to_pb(entry: SubmitEntry) -> pb.BatchEntry:
    orders = [codec.new_order_from_intent(i, account_id=entry.account_id) for i in entry.intents]
    if entry.group:
        return pb.BatchEntry(group=pb.SubmitOrderGroupRequest(orders=orders))
    return pb.BatchEntry(order=orders[0])


def _refusal(error: pb.Error, method: str) -> OmsCallError:
    code = error.code or grpc.StatusCode.UNKNOWN.name
    return OmsCallError(
        f"OMS refused: {code}: {error.message}",
        method=method,
        code=code,
        retryable=code in {c.name for c in RETRYABLE_CODES},
    )


def _order_outcome(answer: pb.SubmitOrdersResponse) -> SubmitOutcome:
    if answer.HasField("error"):
        return SubmitOutcome(error=_refusal(answer.error, "SubmitOrders"))
    return SubmitOutcome(orders=(codec.order_from_pb(answer.order),))


def _outcomes(entries: Sequence[SubmitEntry], ack: pb.OrderBatchAck) -> list[SubmitOutcome]:
    """One outcome per entry from a batch acknowledgement (decoded in one pass)."""
    if ack.HasField("error"):
        if ack.error.code == grpc.StatusCode.FAILED_PRECONDITION.name:
            raise _BatchesRefused(ack.error.message)
        refused = _refusal(ack.error, "SubmitOrders")
        return [SubmitOutcome(error=refused) for _ in entries]
    if len(ack.acks) != len(entries):
        raise OmsCallError(
            f"OMS acknowledged {len(ack.acks)} of {len(entries)} batch entries",
            method="SubmitOrders",
            code="DATA_LOSS",
            retryable=True,
        )
    out: list[SubmitOutcome] = []
    for entry, one in zip(entries, ack.acks, strict=True):
        if not entry.group:
            out.append(_order_outcome(one.order))
        elif one.HasField("group_error"):
            out.append(SubmitOutcome(error=_refusal(one.group_error, "SubmitOrderGroup")))
        else:
            out.append(
                SubmitOutcome(orders=tuple(codec.order_from_pb(o) for o in one.group.orders))
            )
    return out


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
