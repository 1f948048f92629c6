"""One execution while this worker owns it: orders, fills, positions, ticks and stopping.

The runner glues the pure engines (portfolio, order states, risk, stop-loss, rebalancing)
to the ports. It keeps two invariants of ARCHITECTURE.md:
- intent before action: every order is recorded in the store (`record_intents`) before the
  OMS hears of it, and a known order is never re-planned, only re-asked about;
- one transaction per outcome: order updates, new fills and the execution's new state are
  written together (`record_order_reports`), so positions always equal the recorded fills.
Every state mutation runs under the runner's lock; a store failure marks the runner `dirty`
and the worker reloads it from the store and the OMS (`Worker._resync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from strategy_worker import messages as msg
from strategy_worker.domain.clock import Clock
from strategy_worker.domain.events import RiskEvent, StopLossTriggered
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.money import ZERO
from strategy_worker.domain.order_state import OrderState
from strategy_worker.domain.orders import (
    ExecutionReport,
    Fill,
    OmsOrder,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.domain.positions import Portfolio, Valuation
from strategy_worker.domain.rebalancing import plan_rebalance
from strategy_worker.domain.risk.manager import RiskContext, RiskManager
from strategy_worker.domain.risk.state import ExecutionRisk
from strategy_worker.errors import DomainError, OmsError
from strategy_worker.log import get_logger
from strategy_worker.metrics import WorkerMetrics
from strategy_worker.ports import EventSink, OmsGateway
from strategy_worker.runtime.facts import ExecutionInfo, Outbox, WorkerView
from strategy_worker.store import (
    ExecutionState,
    ExecutionStatus,
    Fence,
    FillRecord,
    OrderUpdate,
    RiskEventRecord,
    Severity,
    SnapshotRecord,
    StateWrite,
    Store,
    TradingState,
)

_log = get_logger(__name__)


class ExecutionRunner:
    """Drives one owned execution; created new (`for_new`) or resumed (`resume`)."""

    def __init__(
        self,
        *,
        info: ExecutionInfo,
        status: ExecutionStatus,
        portfolio: Portfolio,
        risk: ExecutionRisk,
        next_seq: int,
        fence: Fence | None,
        store: Store,
        oms: OmsGateway,
        events: EventSink,
        risk_manager: RiskManager,
        metrics: WorkerMetrics,
        clock: Clock,
        worker: WorkerView,
    ) -> None:
        self.info = info
        self.status = status
        self.portfolio = portfolio
        self.risk = risk
        self.next_seq = next_seq
        self.fence = fence
        self.orders: dict[str, OrderState] = {}
        self.dirty = False
        self.lock = asyncio.Lock()
        self.first_orders_answered = asyncio.Event()
        """Clear while the first orders' submit is in flight: OMS reports about them wait,
        so the answer is applied first (one write, `submitted` before `filled`)."""
        self.first_orders_answered.set()
        self.last_prices: dict[str, Decimal] = {}
        self.last_valuation: Valuation | None = None
        self.stop_reason: str | None = None
        self.risk_event_count = 0
        self._store = store
        self._oms = oms
        self._events = events
        self._rm = risk_manager
        self._metrics = metrics
        self._clock = clock
        self._worker = worker
        self._ctx = msg.EventContext(
            execution_id=info.execution_id, strategy_id=info.strategy_id, user_id=info.user_id
        )
        self._fills_seen = asyncio.Event()

    # ------------------------------------------------------------------ construction

    @property
    def execution_id(self) -> uuid.UUID:
        return self.info.execution_id

    @property
    def open_orders(self) -> list[OrderState]:
        return [o for o in self.orders.values() if o.is_live]

    def pending_sells(self) -> dict[str, Decimal]:
        """Shares per symbol that live SELL orders will still sell (not to be sold twice)."""
        pending: dict[str, Decimal] = {}
        for order in self.open_orders:
            if order.intent.side is Side.SELL:
                sym = order.intent.symbol
                pending[sym] = pending.get(sym, ZERO) + order.remaining_quantity
        return pending

    @property
    def running(self) -> bool:
        return self.status.is_running

    def exposure(self) -> Decimal:
        """Long market value at the last marks plus the remaining notional of buys in flight."""
        value = self.last_valuation.market_value if self.last_valuation else ZERO
        if self.last_valuation is None:
            value = sum((p.cost_basis for p in self.portfolio.positions.values()), ZERO)
        for order in self.orders.values():
            if order.is_live and order.intent.side is Side.BUY:
                value += order.remaining_quantity * order.intent.price
        return value

    # ------------------------------------------------------------------ state for the store

    def state(self) -> ExecutionState:
        val = self.last_valuation
        unrealized = val.unrealized_pnl if val else ZERO
        pf = self.portfolio
        return ExecutionState(
            status=self.status,
            positions={**pf.to_json(), "risk": self.risk.to_json()},
            cash=pf.cash,
            fees=pf.fees,
            realized_pnl=pf.realized_pnl,
            unrealized_pnl=unrealized,
            total_pnl=pf.realized_pnl + unrealized - pf.fees,
            total_trades=pf.total_trades,
            winning_trades=pf.winning_trades,
            losing_trades=pf.losing_trades,
            trading_state=TradingState(self.risk.state.value),
            trading_day=self.risk.trading_day,
            day_start_equity=self.risk.day_start_equity,
            stop_reason=self.stop_reason,
            stopped_at=self._clock.now() if self.status is ExecutionStatus.STOPPED else None,
        )

    def state_write(self) -> StateWrite:
        return StateWrite(execution_id=self.execution_id, state=self.state(), fence=self.fence)

    def valuate(self, prices: Mapping[str, Decimal]) -> Valuation:
        """Value the portfolio at the freshest known marks (and remember them).

        Only this execution's own symbols are kept: the monitor passes one shared map of
        every symbol, and 10,000 executions each copying it would not fit in memory."""
        marks = self.last_prices
        for symbol in (*self.info.targets, *self.portfolio.positions):
            price = prices.get(symbol)
            if price is not None:
                marks[symbol] = price
        self.last_valuation = self.portfolio.valuation(self.last_prices)
        return self.last_valuation

    # ------------------------------------------------------------------ risk gate

    def _context(self, symbol: str) -> RiskContext:
        pending_buy_qty = pending_sell_qty = pending_buy_value = ZERO
        for order in self.orders.values():
            if not order.is_live:
                continue
            intent = order.intent
            remaining = order.remaining_quantity
            if intent.side is Side.BUY:
                pending_buy_value += remaining * intent.price
                if intent.symbol == symbol:
                    pending_buy_qty += remaining
            elif intent.symbol == symbol:
                pending_sell_qty += remaining
        val = self.last_valuation or self.portfolio.valuation(self.last_prices)
        return RiskContext(
            execution=self.risk,
            equity=val.equity,
            cash=self.portfolio.cash - pending_buy_value,
            position_quantity=self.portfolio.quantity(symbol),
            pending_buy_quantity=pending_buy_qty,
            pending_sell_quantity=pending_sell_qty,
            worker_exposure=self._worker.exposure,
        )

    def gate(self, intents: Sequence[OrderIntent], out: Outbox) -> list[OrderIntent]:
        """Risk-check a batch in order (each check sees the ones approved before it as in
        flight); denials become risk events and `order_rejected` events, never exceptions."""
        approved: list[OrderIntent] = []
        for intent in intents:
            decision = self._rm.check(intent, self._context(intent.symbol))
            for event in decision.events:
                self.risk_row(event, out)
            if not decision.approved:
                self._metrics.orders_rejected.labels(source="risk").inc()
                reason = decision.reason.value if decision.reason else "DENIED"
                text = decision.events[0].description if decision.events else reason
                out.events.append(
                    msg.order_rejected(
                        self._ctx,
                        at=self._clock.now(),
                        order=intent,
                        client_order_id=None,
                        source="risk",
                        reason_code=reason,
                        reason=text,
                    )
                )
                continue
            qty = decision.quantity_for(intent)
            final = intent if qty == intent.quantity else replace(intent, quantity=qty)
            approved.append(final)
            # Seen as in flight by the next check of the same batch.
            self.orders[final.client_order_id] = OrderState(final)
        for intent in approved:
            del self.orders[intent.client_order_id]
        return approved

    def renumber(self, intents: Sequence[OrderIntent]) -> list[OrderIntent]:
        """Give approved intents consecutive sequence numbers from `next_seq` (denied ones
        leave no gap) and their deterministic client order ids."""
        out = []
        for offset, intent in enumerate(intents):
            seq = self.next_seq + offset
            out.append(
                replace(
                    intent,
                    intent_seq=seq,
                    client_order_id=client_order_id(self.execution_id, seq),
                )
            )
        return out

    def risk_row(self, event: RiskEvent, out: Outbox) -> None:
        now = self._clock.now()
        row = RiskEventRecord(
            event_id=uuid.uuid4(),
            execution_id=self.execution_id,
            event_type=str(event.event_type),
            severity=Severity(str(event.severity)),
            description=event.description,
            action_taken=event.action_taken,
            occurred_at=now,
            details=dict(event.details) | ({"symbol": event.symbol} if event.symbol else {}),
        )
        out.risk_rows.append(row)
        self.risk_event_count += 1
        self._metrics.record_risk_event(row.event_type, row.severity.value)
        out.events.append(
            msg.risk_event(
                self._ctx,
                at=now,
                event_type=row.event_type,
                severity=row.severity.value,
                description=row.description,
                action_taken=row.action_taken,
                symbol=event.symbol,
            )
        )

    async def flush(self, out: Outbox) -> None:
        """Insert the risk rows, then publish the events (only after they are durable)."""
        if out.risk_rows:
            await self._store.insert_risk_events(out.risk_rows)
        if out.events:
            await self._events.publish_batch(self._ctx.key, list(out.events))
        out.events.clear()
        out.risk_rows.clear()

    # ------------------------------------------------------------------ orders out

    async def record_and_submit(self, intents: Sequence[OrderIntent], out: Outbox) -> None:
        """Intent before action: record the batch (and the new next_seq) durably, then send."""
        if not intents:
            return
        self.next_seq = max(i.intent_seq for i in intents) + 1
        await self._store.record_intents(
            self.execution_id,
            intents,
            next_intent_seq=self.next_seq,
            state=self.state(),
            fence=self.fence,
        )
        for intent in intents:
            self.orders[intent.client_order_id] = OrderState(intent)
        await self.submit(intents, out)

    async def submit(self, intents: Sequence[OrderIntent], out: Outbox) -> None:
        """Send recorded intents and apply the answers (call under the runner's lock)."""
        views = await self.send(intents)
        if views is not None:
            await self.accept(views, out)

    async def send(self, intents: Sequence[OrderIntent]) -> list[OmsOrder] | None:
        """Only the OMS call: recorded intents out, the OMS's views back (no state touched,
        so it needs no lock). None when the OMS failed: the intents stay PENDING for
        reconciliation, which asks the OMS about each client order id before it resubmits."""
        try:
            return await self._oms.submit_many(intents, account_id=self.info.account_id)
        except OmsError as exc:
            _log.warning(
                "oms submit failed; orders stay pending for reconciliation",
                execution_id=str(self.execution_id),
                orders=len(intents),
                error=str(exc),
                retryable=exc.retryable,
            )
            return None

    async def accept(self, views: Sequence[OmsOrder], out: Outbox) -> None:
        """The OMS's answers to a submit: `submitted` events, then fills and statuses."""
        self._metrics.orders_submitted.inc(len(views))
        now = self._clock.now()
        for view in views:
            state = self.orders.get(view.client_order_id)
            if state is not None:
                out.events.append(
                    msg.order_submitted(
                        self._ctx, at=now, intent=state.intent, oms_order_id=view.oms_order_id
                    )
                )
        await self.apply_views(views, out)

    # ------------------------------------------------------------------ reports in

    async def apply_views(self, views: Sequence[OmsOrder], out: Outbox) -> None:
        """Apply the OMS's view of orders (submit answers, reconciliation): new fills by
        fill id exactly once, then terminal statuses."""
        reports: list[tuple[OrderState, list[Fill], OrderStatus | None, str, str]] = []
        for view in views:
            state = self.orders.get(view.client_order_id)
            if state is None:
                continue
            terminal = view.status if view.status in _END_WITHOUT_FILL else None
            if view.status is OrderStatus.ACCEPTED or view.oms_order_id:
                state.oms_order_id = state.oms_order_id or view.oms_order_id
            reports.append((state, list(view.fills), terminal, view.reason, view.oms_order_id))
        await self._apply(reports, out, cursor=None)

    async def apply_reports(
        self, reports: Sequence[ExecutionReport], out: Outbox, cursor: tuple[str, int] | None
    ) -> None:
        """Apply execution reports from the OMS stream (acks, fills, rejects, cancels)."""
        batch: list[tuple[OrderState, list[Fill], OrderStatus | None, str, str]] = []
        for report in reports:
            state = self.orders.get(report.client_order_id)
            if state is None:
                continue
            fills = [report.fill] if report.fill is not None else []
            terminal = report.status if report.status in _END_WITHOUT_FILL else None
            batch.append((state, fills, terminal, report.reason, report.oms_order_id))
        await self._apply(batch, out, cursor=cursor)

    async def _apply(
        self,
        batch: Sequence[tuple[OrderState, list[Fill], OrderStatus | None, str, str]],
        out: Outbox,
        *,
        cursor: tuple[str, int] | None,
    ) -> None:
        changed: dict[str, OrderState] = {}
        new_fills: list[FillRecord] = []
        now = self._clock.now()
        for state, fills, terminal, reason, oms_id in batch:
            before = (state.status, state.filled_quantity, state.oms_order_id)
            if oms_id and state.status is OrderStatus.PENDING:
                state.on_accepted(oms_id)
            for fill in fills:
                update = state.on_fill(fill)
                if update.risk_event is not None:
                    self.risk_row(update.risk_event, out)
                if update.fill is None:
                    continue
                try:
                    self.portfolio.apply_fill(update.fill)
                except DomainError as exc:
                    self.anomaly(f"fill {fill.fill_id} cannot be booked: {exc}", out)
                    continue
                new_fills.append(FillRecord(fill=update.fill))
                out.events.append(
                    msg.order_filled(
                        self._ctx,
                        at=now,
                        fill=update.fill,
                        oms_order_id=state.oms_order_id,
                        status=state.status,
                        filled_quantity=state.filled_quantity,
                    )
                )
                if state.status is OrderStatus.FILLED:
                    self._metrics.orders_filled.inc()
            if terminal is OrderStatus.REJECTED and state.on_rejected(reason).applied:
                self._metrics.orders_rejected.labels(source="oms").inc()
                out.events.append(
                    msg.order_rejected(
                        self._ctx,
                        at=now,
                        order=state.intent,
                        client_order_id=state.client_order_id,
                        source="oms",
                        reason_code="OMS_REJECTED",
                        reason=reason or "rejected by the OMS",
                    )
                )
            elif terminal is OrderStatus.CANCELLED:
                state.on_cancelled(reason)
            if (state.status, state.filled_quantity, state.oms_order_id) != before:
                changed[state.client_order_id] = state
        if not changed and cursor is None:
            return
        if new_fills:
            self._fills_seen.set()
            self.valuate({})
        updates = [_order_update(s) for s in changed.values()]
        await self._store.record_order_reports(
            updates=updates,
            fills=new_fills,
            states=[self.state_write()] if changed else [],
            cursor=cursor,
        )

    def anomaly(self, text: str, out: Outbox) -> None:
        """Something we cannot explain: trade only to reduce risk until an operator looks."""
        _log.error("execution anomaly", execution_id=str(self.execution_id), detail=text)
        self.risk.enter_reducing(text)
        self._drain_risk(out)

    def _drain_risk(self, out: Outbox) -> None:
        for event in self.risk.take_events():
            risk_event = getattr(event, "risk_event", None)
            if isinstance(risk_event, RiskEvent):
                self.risk_row(risk_event, out)

    # ------------------------------------------------------------------ ticks

    def monitor(self, prices: Mapping[str, Decimal], out: Outbox) -> list[OrderIntent]:
        """Position check: P&L, daily loss and stop-losses. Returns stop-loss intents that
        passed the risk gate (to record and submit); the caller snapshots and persists."""
        val = self.valuate(prices)
        self._rm.observe(self.risk, val.equity)
        self._drain_risk(out)
        scan = self.risk.stops.scan(
            self.portfolio.positions,
            self.last_prices,
            execution_id=self.execution_id,
            first_seq=self.next_seq,
            pending_sells=self.pending_sells(),
        )
        for event in scan.events:
            self.risk_row(event.risk_event, out)
            if isinstance(event, StopLossTriggered):
                pos = val.positions.get(event.symbol)
                out.events.append(
                    msg.stop_loss_triggered(
                        self._ctx,
                        at=self._clock.now(),
                        symbol=event.symbol,
                        quantity=event.quantity,
                        average_cost=pos.avg_cost if pos else ZERO,
                        stop_price=event.stop_level,
                        price=event.mark,
                        unrealized_pnl=pos.unrealized_pnl if pos else ZERO,
                    )
                )
        if not scan.intents:
            return []
        return self.renumber(self.gate(scan.intents, out))

    def snapshot(self) -> SnapshotRecord:
        val = self.last_valuation or self.valuate({})
        return SnapshotRecord(
            snapshot_id=uuid.uuid4(),
            execution_id=self.execution_id,
            taken_at=self._clock.now(),
            positions=self.portfolio.to_json()["positions"],
            total_value=val.equity,
            total_pnl=val.total_pnl,
            unrealized_pnl=val.unrealized_pnl,
            realized_pnl=val.realized_pnl,
            cash=val.cash,
        )

    def plan_rebalance(
        self, prices: Mapping[str, Decimal], threshold: Decimal, out: Outbox
    ) -> tuple[list[OrderIntent], list[OrderIntent], Decimal]:
        """Rebalance plan (sells, buys, drift) when drift exceeds the threshold and nothing
        is in flight; the caller gates and sends the sells first and the buys once the
        sells have freed their cash. Nothing is gated here."""
        if self.status is not ExecutionStatus.ACTIVE or self.risk.state.value != "ACTIVE":
            return [], [], ZERO
        if self.open_orders:
            return [], [], ZERO
        val = self.valuate(prices)
        plan = plan_rebalance(
            val,
            self.info.targets,
            self.last_prices,
            self.info.limits,
            execution_id=self.execution_id,
            first_seq=self.next_seq,
            threshold=threshold,
            blocked=frozenset(self.risk.stops.stopped_out),
            available_exposure=self.info.limits.max_total_exposure - self._worker.exposure,
            # Sell proceeds arrive at fill prices, not at the marks the plan used.
            cash_reserve=self._slippage_reserve(plan_value=val.equity),
        )
        for event in plan.events:
            self.risk_row(event, out)
        if not plan.triggered or not plan.intents:
            return [], [], plan.drift
        return list(plan.sells), list(plan.buys), plan.drift

    def _slippage_reserve(self, *, plan_value: Decimal) -> Decimal:
        """Cash kept back from a rebalance's buys: 0.1% of equity covers fill slippage."""
        return plan_value * _SLIPPAGE_RESERVE

    def rebalanced_event(
        self, drift: Decimal, orders: Sequence[OrderIntent]
    ) -> Mapping[str, object]:
        return msg.rebalanced(self._ctx, at=self._clock.now(), max_drift=drift, orders=orders)

    # ------------------------------------------------------------------ stopping

    def closing_intents(self, out: Outbox) -> list[OrderIntent]:
        """CLOSE sells for every held share not already being sold (pass even when HALTED)."""
        pending = self.pending_sells()
        intents: list[OrderIntent] = []
        for sym, pos in sorted(self.portfolio.positions.items()):
            qty = pos.quantity - pending.get(sym, ZERO)
            if qty <= 0:
                continue
            price = self.last_prices.get(sym) or pos.last_price
            intents.append(
                OrderIntent(
                    client_order_id="",
                    execution_id=self.execution_id,
                    intent_seq=0,
                    symbol=sym,
                    side=Side.SELL,
                    order_type=OrderType.MARKET,
                    quantity=qty,
                    price=price,
                    purpose=OrderPurpose.CLOSE,
                )
            )
        return self.renumber(self.gate(self.renumber(intents), out)) if intents else []

    async def wait_flat(self, limit_s: float) -> bool:
        """Wait (real seconds) until no order is in flight; False when `limit_s` ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while self.open_orders:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._fills_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fills_seen.wait(), timeout=min(remaining, 0.2))
        return True

    def stopped_event(self, reason: str, request_id: uuid.UUID | None) -> dict[str, object]:
        val = self.last_valuation or self.valuate({})
        return msg.execution_stopped(
            self._ctx,
            at=self._clock.now(),
            reason=reason,
            realized_pnl=val.realized_pnl,
            total_pnl=val.total_pnl,
            request_id=request_id,
        )

    def status_event(
        self, kind: str, reason: str, request_id: uuid.UUID | None
    ) -> dict[str, object]:
        build = msg.execution_paused if kind == "paused" else msg.execution_resumed
        return build(self._ctx, at=self._clock.now(), reason=reason, request_id=request_id)

    def error_event(self, code: str, text: str) -> dict[str, object]:
        return msg.execution_error(self._ctx, at=self._clock.now(), error_code=code, message=text)

    @property
    def context(self) -> msg.EventContext:
        return self._ctx


_END_WITHOUT_FILL = frozenset({OrderStatus.REJECTED, OrderStatus.CANCELLED})
_SLIPPAGE_RESERVE = Decimal("0.001")


def _order_update(state: OrderState) -> OrderUpdate:
    return OrderUpdate(
        client_order_id=state.client_order_id,
        status=state.status,
        filled_quantity=state.filled_quantity,
        filled_price=state.avg_fill_price if state.filled_quantity else None,
        oms_order_id=state.oms_order_id or None,
        fees=state.fees,
        reason=state.reason or None,
    )
