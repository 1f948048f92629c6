"""The paper summary's `consistent` flag (its exit code) checks every stored figure.

An execution with closed trades (a winner and a loser), a partial sell and open positions
at stored marks is written through the real PostgreSQL store; then one stored figure at a
time is corrupted with SQL, and the summary must say `consistent: false` and name it. It
used to compare only realized P&L, fees, cash, total and winning trades: a corrupted losing
trade count, unrealized or total P&L, or position still read as consistent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from strategy_worker.adapters.postgres.config import DatabaseConfig
from strategy_worker.adapters.postgres.migrate import migrate
from strategy_worker.adapters.postgres.repository import PostgresStore
from strategy_worker.domain.ids import client_order_id, execution_id_for
from strategy_worker.domain.money import money_str, quantize_price
from strategy_worker.domain.orders import (
    Fill,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from strategy_worker.domain.positions import Portfolio
from strategy_worker.paper.summary import summarize
from strategy_worker.store import (
    FIRST_LEASE_EPOCH,
    FIRST_VERSION,
    ExecutionState,
    ExecutionStatus,
    ExecutionWrite,
    Fence,
    FillRecord,
    NewExecution,
    OrderUpdate,
)
from strategy_worker.testing.databases import create_database, drop_database

pytestmark = pytest.mark.integration

D = Decimal
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
CAPITAL = D("100000")
MARKS = {"AAPL": D("97.25"), "GOOGL": D("0.0041")}
#: (symbol, side, quantity, price, fee) per order; two fills each, as a venue may send.
TRADES = [
    ("AAPL", Side.BUY, 10, "100", "1"),
    ("MSFT", Side.BUY, 5, "200", "1"),
    ("AAPL", Side.SELL, 10, "90", "1"),  # a losing round trip
    ("MSFT", Side.SELL, 5, "220", "1"),  # a winning one
    ("AAPL", Side.BUY, 4, "95", "0.5"),  # open
    ("GOOGL", Side.BUY, 3000, "0.0030", "0.3"),  # open, sub-cent
    ("GOOGL", Side.SELL, 2000, "0.0035", "0.2"),  # partial sell: cost released
]


@pytest.fixture(scope="module")
def dsn(database_url: str) -> Iterator[str]:
    name = f"sw_summary_{uuid.uuid4().hex[:12]}"
    asyncio.run(create_database(database_url, name))
    url = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    try:
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(drop_database(database_url, name))


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.connect(DatabaseConfig(url=dsn, pool_min_size=1, pool_max_size=2))
    try:
        yield opened
    finally:
        await opened.close()


async def _traded_execution(store: PostgresStore) -> uuid.UUID:
    """An execution whose orders, fills and state are what the worker would have stored."""
    strategy_id = uuid.uuid4()
    execution_id = execution_id_for(strategy_id, T0)
    intents = [
        OrderIntent(
            client_order_id=client_order_id(execution_id, seq),
            execution_id=execution_id,
            intent_seq=seq,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            quantity=D(quantity),
            price=D(price),
            purpose=OrderPurpose.INITIAL if side is Side.BUY else OrderPurpose.REBALANCE,
        )
        for seq, (symbol, side, quantity, price, _) in enumerate(TRADES, start=1)
    ]
    fence = Fence(owner_id="summary-writer", epoch=FIRST_LEASE_EPOCH)
    created = await store.commit(
        [
            ExecutionWrite(
                execution_id=execution_id,
                fence=fence,
                version=FIRST_VERSION,
                create=NewExecution(
                    execution_id=execution_id,
                    strategy_id=strategy_id,
                    user_id=uuid.uuid4(),
                    approved_at=T0,
                    config={"name": "summary check"},
                    initial_capital=CAPITAL,
                    started_at=T0,
                    state=ExecutionState.initial(CAPITAL),
                ),
                intents=intents,
                next_intent_seq=len(intents) + 1,
            )
        ]
    )
    assert created.created == {execution_id}
    book = Portfolio(CAPITAL)
    fills: list[FillRecord] = []
    updates: list[OrderUpdate] = []
    for n, (order, (_, _, _, _, fee)) in enumerate(zip(intents, TRADES, strict=True)):
        first = order.quantity // 2
        parts = []
        for k, qty in enumerate((first, order.quantity - first)):
            parts.append(
                Fill(
                    fill_id=f"{order.client_order_id}-{k}",
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    side=order.side,
                    quantity=qty,
                    price=order.price,
                    fee=D(fee) / 2,
                    filled_at=T0 + timedelta(minutes=n, seconds=k),
                )
            )
        for part in parts:
            book.apply_fill(part)
            fills.append(FillRecord(fill=part))
        updates.append(
            OrderUpdate(
                client_order_id=order.client_order_id,
                status=OrderStatus.FILLED,
                filled_quantity=order.quantity,
                filled_price=quantize_price(order.price),
                oms_order_id=f"OMS-{order.client_order_id}",
                fees=D(fee),
            )
        )
    valued = book.valuation(MARKS)
    state = ExecutionState(
        status=ExecutionStatus.ACTIVE,
        positions={**book.to_json(), "marks": {s: money_str(p) for s, p in MARKS.items()}},
        cash=book.cash,
        fees=book.fees,
        realized_pnl=book.realized_pnl,
        unrealized_pnl=valued.unrealized_pnl,
        total_pnl=valued.total_pnl,
        total_trades=book.total_trades,
        winning_trades=book.winning_trades,
        losing_trades=book.losing_trades,
    )
    # The reports and the state they led to, in one commit (as the worker writes them).
    reported = await store.commit(
        [
            ExecutionWrite(
                execution_id=execution_id,
                fence=fence,
                version=FIRST_VERSION + 1,
                state=state,
                order_updates=updates,
                fills=fills,
            )
        ]
    )
    assert reported.lost == frozenset()
    return execution_id


async def test_untouched_execution_is_consistent_with_the_replay_of_its_fills(
    store: PostgresStore,
) -> None:
    execution_id = await _traded_execution(store)

    summary = await summarize(store, execution_id)

    assert summary.mismatches == ()
    assert summary.consistent is True
    assert (summary.total_trades, summary.trades_won, summary.trades_lost) == (2, 1, 1)


_EXECUTION = "UPDATE strategy_executions SET {set} WHERE execution_id = $1"
_ORDER = "UPDATE execution_orders SET {set} WHERE execution_id = $1 AND intent_seq = 5"  # AAPL buy

CORRUPTIONS = [
    ("losing_trades", _EXECUTION, "losing_trades = losing_trades + 1"),
    ("winning_trades", _EXECUTION, "winning_trades = winning_trades + 1"),
    ("total_trades", _EXECUTION, "total_trades = total_trades + 1"),
    ("unrealized_pnl", _EXECUTION, "unrealized_pnl = unrealized_pnl + 0.01"),
    ("total_pnl", _EXECUTION, "total_pnl = total_pnl - 0.01"),
    ("realized_pnl", _EXECUTION, "realized_pnl = realized_pnl + 1"),
    ("cash", _EXECUTION, "cash = cash + 0.0001"),
    ("fees", _EXECUTION, "fees = fees + 1"),
    (
        "positions.AAPL.quantity",
        _EXECUTION,
        "positions = jsonb_set(positions, '{positions,AAPL,quantity}', '\"5\"')",
    ),
    (
        "positions.GOOGL.cost_basis",
        _EXECUTION,
        "positions = jsonb_set(positions, '{positions,GOOGL,cost_basis}', '\"0.0031\"')",
    ),
    ("positions.GOOGL", _EXECUTION, "positions = positions #- '{positions,GOOGL}'"),
    (
        "positions.TSLA",
        _EXECUTION,
        "positions = jsonb_set(positions, '{positions,TSLA}', (positions #> '{positions,AAPL}'))",
    ),
    (
        "positions.trades.losing",
        _EXECUTION,
        "positions = jsonb_set(positions, '{trades,losing}', '0')",
    ),
    # Marks moved after the figures were computed: unrealized no longer matches them.
    (
        "unrealized_pnl",
        _EXECUTION,
        "positions = jsonb_set(positions, '{marks,AAPL}', '\"98\"')",
    ),
    ("orders.{coid}.filled_quantity", _ORDER, "filled_quantity = 3"),
    ("orders.{coid}.fees", _ORDER, "fees = fees + 0.5"),
    ("orders.{coid}.filled_price", _ORDER, "filled_price = 95.01"),
    ("orders.{coid}.status", _ORDER, "status = 'CANCELLED'"),
]


@pytest.mark.parametrize(
    ("figure", "table", "assignment"),
    CORRUPTIONS,
    ids=[f"{figure}:{assignment[:30]}" for figure, _, assignment in CORRUPTIONS],
)
async def test_each_corrupted_stored_figure_makes_the_summary_inconsistent_and_is_named(
    store: PostgresStore, dsn: str, figure: str, table: str, assignment: str
) -> None:
    # Arrange
    execution_id = await _traded_execution(store)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(table.format(set=assignment), execution_id)
    finally:
        await conn.close()
    figure = figure.format(coid=client_order_id(execution_id, 5))

    # Act
    summary = await summarize(store, execution_id)

    # Assert
    assert summary.consistent is False
    named = [m.figure for m in summary.mismatches]
    assert figure in named, summary.mismatches
    assert summary.to_json()["consistent"] is False
    assert figure in [m["figure"] for m in summary.to_json()["mismatches"]]


async def test_open_position_without_a_mark_cannot_pass_as_consistent(
    store: PostgresStore, dsn: str
) -> None:
    execution_id = await _traded_execution(store)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(_EXECUTION.format(set="positions = positions - 'marks'"), execution_id)
    finally:
        await conn.close()

    unpriced = await summarize(store, execution_id)
    priced = await summarize(store, execution_id, marks=MARKS)

    assert not unpriced.consistent
    (mismatch,) = unpriced.mismatches
    assert mismatch.figure == "unrealized_pnl"
    assert "no mark for AAPL, GOOGL" in mismatch.replayed
    assert priced.consistent, priced.mismatches


async def test_fills_that_do_not_replay_are_reported_not_raised(
    store: PostgresStore, dsn: str
) -> None:
    execution_id = await _traded_execution(store)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        # The first AAPL sell fill now sells more than was ever bought.
        await conn.execute(
            "UPDATE execution_fills SET quantity = 50 WHERE fill_id = $1",
            f"{client_order_id(execution_id, 3)}-0",
        )
    finally:
        await conn.close()

    summary = await summarize(store, execution_id)

    assert not summary.consistent
    assert [m.figure for m in summary.mismatches] == ["fills"]
    assert dataclasses.asdict(summary.mismatches[0])["replayed"].startswith("do not replay")
