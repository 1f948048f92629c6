"""The ASGI application: REST reads, control actions, the live WebSocket and the dashboard.

Every route but `/healthz`, the dashboard's static files and the OpenAPI document needs a
bearer token; a caller sees and steers only their own executions (operators: all). Another
user's execution answers 404, exactly like one that does not exist. Money is written as
exact JSON numbers (`encode_json`). Endpoint reference: docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from strategy_worker.api.controls import (
    ControlConflict,
    ControlOrder,
    ControlPublisher,
    ControlUnavailable,
)
from strategy_worker.api.performance import EquityPoint, performance
from strategy_worker.api.reads import ReadModel, decode_page_token, plain, row_dict
from strategy_worker.api.stream import CursorExpired, StreamHub, decode_cursor
from strategy_worker.api.views import execution_detail, fills_of, price_chart
from strategy_worker.auth.tokens import AuthFailure, Principal, TokenVerifier
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.errors import StrategyWorkerError
from strategy_worker.log import get_logger
from strategy_worker.messages.control import ControlAction
from strategy_worker.messages.jsonwire import encode_json
from strategy_worker.ports import PriceSource

STATIC_DIR = Path(__file__).with_name("static")
API = "/api/v1"
_log = get_logger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the routes use; built by `server.py` (or a test) and handed to `create_app`."""

    reads: ReadModel
    controls: ControlPublisher
    hub: StreamHub | None
    verifier: TokenVerifier
    worker_limits: RiskLimits
    prices: PriceSource | None = None
    default_page_size: int = 50
    max_page_size: int = 500
    clock: Clock = _utc_now


class ExactJSON(Response):
    """JSON with Decimals as exact numbers (never through a float)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode_json(plain(content)).encode("utf-8")


class ControlBody(BaseModel):
    """Optional body of pause / resume / stop."""

    model_config = ConfigDict(extra="forbid")
    #: Idempotency key: the same id again returns the same request, published once.
    request_id: uuid.UUID | None = None
    reason: str = Field(default="", max_length=500)


class KillSwitchBody(BaseModel):
    """An operator's kill switch: stop, or reduce-only (or clear it), for one user or all."""

    model_config = ConfigDict(extra="forbid")
    scope: Literal["user", "all"]
    user_id: uuid.UUID | None = None
    mode: Literal["stop", "reduce_only", "clear_reduce_only"]
    request_id: uuid.UUID | None = None
    reason: str = Field(default="", max_length=500)


def _error(status: int, code: str, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail})


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def caller(request: Request) -> Principal:
    """The verified caller of a request, or 401 (the token itself is never echoed)."""
    ctx: ApiContext = request.app.state.ctx
    result = ctx.verifier.verify(bearer(request.headers.get("authorization")), now=ctx.clock())
    if isinstance(result, AuthFailure):
        raise HTTPException(
            status_code=401,
            detail={"error": str(result.code), "detail": result.detail},
            headers={"WWW-Authenticate": f'Bearer error="{_www_error(result)}"'},
        )
    return result


Caller = Annotated[Principal, Depends(caller)]
OptionalControlBody = Annotated[ControlBody | None, Body()]


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Strategy Worker API",
        version="1",
        description="Executions, their orders, fills, risk events and performance; control "
        "requests; a live event stream. Reference: docs/api.md.",
        default_response_class=ExactJSON,
        docs_url=f"{API}/docs",
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
    )
    app.state.ctx = ctx

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        return ExactJSON(exc.detail, status_code=exc.status_code, headers=headers)

    async def visible_execution(execution_id: str, who: Principal) -> uuid.UUID:
        try:
            parsed = uuid.UUID(execution_id)
        except ValueError:
            raise _error(404, "not_found", "no such execution") from None
        if not await ctx.reads.visible(parsed, None if who.is_operator else who.user_id):
            raise _error(404, "not_found", "no such execution")
        return parsed

    def page_size(limit: int | None) -> int:
        return min(limit or ctx.default_page_size, ctx.max_page_size)

    async def marks_for(symbols: list[str]) -> Mapping[str, Decimal]:
        if ctx.prices is None or not symbols:
            return {}
        try:
            return await ctx.prices.get_prices(symbols)
        except Exception as exc:  # a price outage must not break reads; marks fall back
            _log.warning("marks unavailable", error=type(exc).__name__)
            return {}

    # ------------------------------------------------------------------ reads

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> ExactJSON:
        return ExactJSON({"status": "ok", "stream": ctx.hub.source if ctx.hub else None})

    @app.get(f"{API}/me", summary="Who the token says you are")
    async def me(who: Caller) -> ExactJSON:
        return ExactJSON({"user_id": who.user_id, "role": str(who.role)})

    @app.get(f"{API}/executions", summary="Executions, newest first (paged)")
    async def list_executions(
        who: Caller,
        status: Annotated[
            Literal["active", "paused", "stopped", "completed", "error"] | None, Query()
        ] = None,
        strategy_id: uuid.UUID | None = None,
        limit: Annotated[int | None, Query(ge=1)] = None,
        page_token: str | None = None,
    ) -> ExactJSON:
        after = decode_page_token(page_token) if page_token else None
        if page_token and after is None:
            raise _error(400, "bad_page_token", "page_token is not one this API issued")
        rows, token = await ctx.reads.list_executions(
            owner=None if who.is_operator else who.user_id,
            status=status,
            strategy_id=strategy_id,
            after=after,
            limit=page_size(limit),
        )
        return ExactJSON({"executions": rows, "next_page_token": token})

    @app.get(f"{API}/executions/{{execution_id}}", summary="One execution, at current marks")
    async def get_execution(execution_id: str, who: Caller) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        row = await ctx.reads.execution(eid, None)
        if row is None:
            raise _error(404, "not_found", "no such execution")
        state = row["positions"] if isinstance(row["positions"], Mapping) else {}
        symbols = sorted((state.get("positions") or {}).keys())
        return ExactJSON(execution_detail(row, await marks_for(symbols), ctx.worker_limits))

    @app.get(f"{API}/executions/{{execution_id}}/orders", summary="Orders, by intent sequence")
    async def orders(execution_id: str, who: Caller) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        return ExactJSON({"orders": [row_dict(r) for r in await ctx.reads.orders(eid)]})

    @app.get(f"{API}/executions/{{execution_id}}/fills", summary="Fills, oldest first")
    async def fills(execution_id: str, who: Caller) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        return ExactJSON({"fills": [row_dict(r) for r in await ctx.reads.fills(eid)]})

    @app.get(f"{API}/executions/{{execution_id}}/risk-events", summary="Risk events, newest first")
    async def risk_events(
        execution_id: str,
        who: Caller,
        severity: Literal["INFO", "WARNING", "CRITICAL"] | None = None,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        rows = await ctx.reads.risk_events(eid, severity=severity, limit=page_size(limit))
        return ExactJSON({"risk_events": rows})

    @app.get(f"{API}/executions/{{execution_id}}/decisions", summary="Signal decisions")
    async def decisions(
        execution_id: str, who: Caller, limit: Annotated[int | None, Query(ge=1)] = None
    ) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        rows = await ctx.reads.decisions(eid, limit=page_size(limit))
        return ExactJSON({"available": rows is not None, "decisions": rows or []})

    @app.get(f"{API}/executions/{{execution_id}}/equity", summary="Equity curve (snapshots)")
    async def equity(
        execution_id: str,
        who: Caller,
        max_points: Annotated[int, Query(ge=2, le=20_000)] = 2_000,
    ) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        rows = await ctx.reads.snapshots(eid)
        step = max(1, -(-len(rows) // max_points))
        picked = rows[::step]
        if rows and picked[-1] is not rows[-1]:
            picked.append(rows[-1])
        points = [row_dict(r, skip=("positions",)) for r in picked]
        return ExactJSON({"points": points, "total_snapshots": len(rows)})

    @app.get(f"{API}/executions/{{execution_id}}/performance", summary="Return, drawdown, ratios")
    async def perf(execution_id: str, who: Caller) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        row = await ctx.reads.execution(eid, None)
        assert row is not None
        fill_rows = await ctx.reads.fills(eid)
        snaps = await ctx.reads.snapshots(eid)
        detail = execution_detail(
            row, await marks_for(sorted({f["symbol"] for f in fill_rows})), ctx.worker_limits
        )
        marks = {p["symbol"]: p["mark"] for p in detail["positions"]}
        return ExactJSON(
            performance(
                initial=row["initial_capital"],
                final_equity=detail["at_marks"]["equity"],
                curve=[EquityPoint(s["taken_at"], s["total_value"]) for s in snaps],
                fills=fills_of(fill_rows),
                marks=marks,
            )
        )

    @app.get(f"{API}/executions/{{execution_id}}/chart", summary="Prices seen and trade markers")
    async def chart(execution_id: str, symbol: str, who: Caller) -> ExactJSON:
        eid = await visible_execution(execution_id, who)
        row = await ctx.reads.execution(eid, None)
        assert row is not None
        marks = await marks_for([symbol])
        detail = execution_detail(row, marks, ctx.worker_limits)
        stop = next((p["stop_level"] for p in detail["positions"] if p["symbol"] == symbol), None)
        return ExactJSON(
            price_chart(
                symbol,
                await ctx.reads.orders(eid),
                await ctx.reads.fills(eid),
                marks.get(symbol),
                ctx.clock(),
                stop,
            )
        )

    # ------------------------------------------------------------------ actions

    async def submit(order: ControlOrder) -> Response:
        try:
            done = await ctx.controls.submit(order, now=ctx.clock())
        except ControlConflict as exc:
            raise _error(409, "request_id_reused", str(exc)) from None
        except ControlUnavailable as exc:
            raise _error(503, "control_unavailable", str(exc)) from None
        except StrategyWorkerError as exc:  # Kafka refused or is away: nothing was recorded
            raise _error(503, "control_publish_failed", str(exc)) from None
        body = {
            "request_id": done.request_id,
            "messages": done.messages,
            "replayed": not done.published_now,
            "status_url": f"{API}/control-requests/{done.request_id}",
        }
        return ExactJSON(body, status_code=202)

    async def execution_action(
        execution_id: str, who: Principal, action: ControlAction, body: ControlBody | None
    ) -> Response:
        eid = await visible_execution(execution_id, who)
        row = await ctx.reads.execution(eid, None)
        if row is None or row["status"] not in ("active", "paused"):
            raise _error(409, "not_running", "the execution is not running")
        body = body or ControlBody()
        return await submit(
            ControlOrder(
                request_id=body.request_id or uuid.uuid4(),
                principal=who,
                action=action,
                scope="execution",
                execution_id=eid,
                reason=body.reason,
            )
        )

    @app.post(f"{API}/executions/{{execution_id}}/pause", status_code=202, summary="Pause")
    async def pause(execution_id: str, who: Caller, body: OptionalControlBody = None) -> Response:
        return await execution_action(execution_id, who, ControlAction.PAUSE, body)

    @app.post(f"{API}/executions/{{execution_id}}/resume", status_code=202, summary="Resume")
    async def resume(execution_id: str, who: Caller, body: OptionalControlBody = None) -> Response:
        return await execution_action(execution_id, who, ControlAction.RESUME, body)

    @app.post(f"{API}/executions/{{execution_id}}/stop", status_code=202, summary="Stop")
    async def stop(execution_id: str, who: Caller, body: OptionalControlBody = None) -> Response:
        return await execution_action(execution_id, who, ControlAction.STOP, body)

    @app.post(f"{API}/kill-switch", status_code=202, summary="Operators: stop or reduce-only")
    async def kill_switch(who: Caller, body: KillSwitchBody) -> Response:
        if not who.is_operator:
            raise _error(403, "operator_only", "the kill switch is for operators")
        if (body.scope == "user") != (body.user_id is not None):
            raise _error(422, "bad_scope", "scope user needs user_id; scope all takes none")
        return await submit(
            ControlOrder(
                request_id=body.request_id or uuid.uuid4(),
                principal=who,
                action=ControlAction(body.mode),
                scope=body.scope,
                target_user_id=body.user_id,
                reason=body.reason,
            )
        )

    @app.get(f"{API}/control-requests/{{request_id}}", summary="A control request's outcome")
    async def control_status(request_id: str, who: Caller) -> ExactJSON:
        try:
            rid = uuid.UUID(request_id)
        except ValueError:
            raise _error(404, "not_found", "no such control request") from None
        found = await ctx.controls.status(rid, who)
        if found is None:
            raise _error(404, "not_found", "no such control request")
        return ExactJSON(found)

    # ------------------------------------------------------------------ live

    @app.websocket(f"{API}/stream")
    async def stream(ws: WebSocket) -> None:
        await live(ws, ctx)

    # ------------------------------------------------------------------ dashboard

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _www_error(failure: AuthFailure) -> str:
    return "invalid_request" if failure.code == "missing_token" else "invalid_token"


# --------------------------------------------------------------------------- websocket


async def live(ws: WebSocket, ctx: ApiContext) -> None:
    """One client's stream: authenticate (header, or a first `subscribe` message with the
    token, since browsers cannot set headers on a WebSocket), then hello, replay, live."""
    await ws.accept()
    hub = ctx.hub
    if hub is None:
        await ws.close(code=1011, reason="no event source")
        return
    try:
        first = json.loads(await asyncio.wait_for(ws.receive_text(), 10))
    except (TimeoutError, json.JSONDecodeError, WebSocketDisconnect, KeyError):
        with contextlib.suppress(Exception):
            await ws.close(code=4400, reason="expected a subscribe message")
        return
    if not isinstance(first, dict) or first.get("type") != "subscribe":
        await ws.close(code=4400, reason="expected a subscribe message")
        return
    token = first.get("token") or bearer(ws.headers.get("authorization"))
    who = ctx.verifier.verify(token if isinstance(token, str) else None, now=ctx.clock())
    if isinstance(who, AuthFailure):
        await ws.close(code=4401, reason=str(who.code))
        return
    execution_id: uuid.UUID | None = None
    if first.get("execution_id"):
        try:
            execution_id = uuid.UUID(str(first["execution_id"]))
        except ValueError:
            execution_id = None
        owner = None if who.is_operator else who.user_id
        if execution_id is None or not await ctx.reads.visible(execution_id, owner):
            await ws.close(code=4404, reason="no such execution")
            return
    cursor = decode_cursor(str(first["cursor"])) if first.get("cursor") else None
    if first.get("cursor") and cursor is None:
        await ws.close(code=4400, reason="malformed cursor")
        return
    await hub.started.wait()
    try:
        client, replay = hub.subscribe(who, cursor=cursor, execution_id=execution_id)
        hello = {"type": "hello", "cursor": first.get("cursor") or hub.cursor, "source": hub.source}
    except CursorExpired:
        client, replay = hub.subscribe(who, cursor=None, execution_id=execution_id)
        hello = {"type": "reset", "reason": "cursor_expired", "cursor": hub.cursor}
    receiver = asyncio.create_task(_drain(ws), name="ws-drain")
    try:
        await ws.send_text(encode_json(hello))
        for frame in replay:
            await ws.send_text(frame)
        async for frame in _until(hub.frames(client), receiver):
            await ws.send_text(frame)
        if client.lagging:
            await ws.close(code=4408, reason="lagging; resume from your last cursor")
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.unsubscribe(client)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed at once."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _until(frames: Any, receiver: asyncio.Task[None]) -> Any:
    """`frames` until the client goes away (the receiver task ends)."""
    iterator = frames.__aiter__()
    while True:
        nxt = asyncio.ensure_future(iterator.__anext__())
        done, _ = await asyncio.wait({nxt, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if nxt not in done:
            nxt.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await nxt
            return
        try:
            yield nxt.result()
        except StopAsyncIteration:
            return
