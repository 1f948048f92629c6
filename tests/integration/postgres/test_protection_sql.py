"""Migration 005 and adapters/postgres/protection.py on the real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from strategy_worker.adapters.postgres import jsoncodec
from strategy_worker.adapters.postgres import protection as P
from strategy_worker.adapters.postgres import sql as Q
from strategy_worker.domain.ids import client_order_id
from strategy_worker.domain.orders import (
    OmsCapabilities,
    OrderIntent,
    OrderPurpose,
    OrderType,
    Side,
    Trail,
)
from strategy_worker.domain.protection import ProtectionBook, ProtectionSpec
from strategy_worker.domain.strategy import ProtectionPlacement
from strategy_worker.store import Fence, order_id_for

pytestmark = pytest.mark.integration

D = Decimal
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
OWNER = "worker-a"
FULL = OmsCapabilities(
    order_types=frozenset(OrderType), oco_groups=True, reduce_only=True, order_groups=True
)
SPEC = ProtectionSpec(
    stop_loss_pct=D("0.05"),
    trailing_stop_pct=D("0.1"),
    take_profit_pct=D("0.25"),
    placement=ProtectionPlacement.AUTO,
)


@pytest.fixture
async def conn(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection with the pool's JSON codec, as the repository's connections have."""
    opened = await asyncpg.connect(migrated_dsn, timeout=10)
    for typename in ("jsonb", "json"):
        await opened.set_type_codec(
            typename, encoder=jsoncodec.dumps, decoder=jsoncodec.loads, schema="pg_catalog"
        )
    try:
        yield opened
    finally:
        await opened.close()


async def new_execution(conn: asyncpg.Connection, *, epoch: int = 3) -> uuid.UUID:
    execution_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO strategy_executions (execution_id, strategy_id, user_id, approved_at,
            config, initial_capital, cash, started_at, owner_id, lease_epoch, lease_expires_at)
        VALUES ($1, $2, $3, $4, '{}'::jsonb, 100000, 100000, $4, $5, $6, $7)
        """,
        execution_id,
        uuid.uuid4(),
        uuid.uuid4(),
        T0,
        OWNER,
        epoch,
        T0 + timedelta(days=3650),
    )
    return execution_id


def armed_book(execution_id: uuid.UUID) -> tuple[ProtectionBook, tuple[OrderIntent, ...]]:
    book = ProtectionBook(execution_id, SPEC, capabilities=FULL)
    book.on_position("AAPL", D(100), D("10000.50"))
    book.on_price("AAPL", D("101.5"), T0)
    return book, book.decide(at=T0, next_seq=5).intents


async def test_the_native_legs_a_book_decides_are_recorded_and_read_back_exactly(
    conn: asyncpg.Connection,
) -> None:
    execution_id = await new_execution(conn)
    _, legs = armed_book(execution_id)
    assert [i.order_type for i in legs] == [
        OrderType.STOP,
        OrderType.TRAILING_STOP,
        OrderType.LIMIT,
    ]

    first = await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *P.protective_intent_params(legs))
    again = await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *P.protective_intent_params(legs))
    rows = await conn.fetch(P.GET_INTENTS_BY_CLIENT_ID, [i.client_order_id for i in legs])

    assert [r["client_order_id"] for r in first] == [i.client_order_id for i in legs]
    assert again == []  # recorded once: the client order id is unique
    assert [P.intent_from_row(r) for r in rows] == list(legs)
    assert {r["oco_group_id"] for r in rows} == {legs[0].oco_group_id}
    assert all(r["reduce_only"] for r in rows)
    assert rows[0]["order_id"] == order_id_for(legs[0].client_order_id)


async def test_orders_recorded_the_1_0_way_are_still_valid_and_map_to_plain_intents(
    conn: asyncpg.Connection,
) -> None:
    execution_id = await new_execution(conn)
    market = OrderIntent(
        client_order_id=client_order_id(execution_id, 1),
        execution_id=execution_id,
        intent_seq=1,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=D(10),
        price=D("175.5"),
        purpose=OrderPurpose.INITIAL,
    )
    await conn.fetch(
        Q.INSERT_INTENTS,
        [order_id_for(market.client_order_id)],
        [execution_id],
        [market.client_order_id],
        [1],
        ["AAPL"],
        ["BUY"],
        ["MARKET"],
        ["INITIAL"],
        [D(10)],
        [D("175.5")],
        [None],
    )

    [row] = await conn.fetch(P.GET_INTENTS_BY_CLIENT_ID, [market.client_order_id])

    assert P.intent_from_row(row) == market
    assert row["reduce_only"] is False


async def test_a_bracket_is_recorded_parent_first_in_one_statement(
    conn: asyncpg.Connection,
) -> None:
    execution_id = await new_execution(conn)

    def leg(seq: int, **fields: object) -> OrderIntent:
        base = OrderIntent(
            client_order_id=client_order_id(execution_id, seq),
            execution_id=execution_id,
            intent_seq=seq,
            symbol="AAPL",
            side=Side.SELL,
            order_type=OrderType.LIMIT,
            quantity=D(100),
            price=D(120),
            purpose=OrderPurpose.TAKE_PROFIT,
            limit_price=D(120),
            parent_client_order_id=client_order_id(execution_id, 1),
            oco_group_id="bracket-1",
            reduce_only=True,
        )
        return replace(base, **fields)  # type: ignore[arg-type]

    entry = leg(
        1,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        purpose=OrderPurpose.INITIAL,
        limit_price=None,
        parent_client_order_id="",
        oco_group_id="",
        reduce_only=False,
    )
    stop = leg(
        3,
        order_type=OrderType.STOP_LIMIT,
        stop_price=D(95),
        limit_price=D(94),
        purpose=OrderPurpose.STOP_LOSS,
        price=D(95),
    )
    group = [entry, leg(2), stop]

    await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *P.protective_intent_params(group))
    rows = await conn.fetch(P.GET_INTENTS_BY_CLIENT_ID, [i.client_order_id for i in group])

    assert [P.intent_from_row(r) for r in rows] == group
    orphan = leg(4, parent_client_order_id="sw-nobody-000001")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *P.protective_intent_params([orphan]))


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"order_type": OrderType.STOP}, "execution_orders_stop_shape_check"),
        (
            {"order_type": OrderType.STOP_LIMIT, "stop_price": D(95)},
            "execution_orders_stop_limit_shape_check",
        ),
        (
            {"order_type": OrderType.MARKET, "stop_price": D(95)},
            "execution_orders_stop_shape_check",
        ),
        (
            {"order_type": OrderType.MARKET, "trail": Trail(pct=D("0.1"))},
            "execution_orders_trail_shape_check",
        ),
        (
            {"order_type": OrderType.TRAILING_STOP, "trail": Trail(pct=D(1))},
            "execution_orders_trail_pct_check",
        ),
        (
            {"order_type": OrderType.MARKET, "oco_group_id": "x", "trail": None},
            None,
        ),
    ],
)
async def test_malformed_protective_orders_are_refused_by_constraint(
    conn: asyncpg.Connection, fields: dict[str, object], constraint: str | None
) -> None:
    execution_id = await new_execution(conn)
    base = OrderIntent(
        client_order_id=client_order_id(execution_id, 9),
        execution_id=execution_id,
        intent_seq=9,
        symbol="AAPL",
        side=Side.SELL,
        order_type=OrderType.MARKET,
        quantity=D(1),
        price=D(100),
        purpose=OrderPurpose.STOP_LOSS,
    )
    intent = replace(base, **fields)  # type: ignore[arg-type]
    params = P.protective_intent_params([intent])

    if constraint is None:  # an OCO member may be any type: accepted
        assert len(await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *params)) == 1
        return
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *params)
    assert info.value.constraint_name == constraint


async def test_the_protection_state_is_written_fenced_and_restores_the_book(
    conn: asyncpg.Connection,
) -> None:
    execution_id = await new_execution(conn, epoch=3)
    book, _ = armed_book(execution_id)
    fence = Fence(owner_id=OWNER, epoch=3)

    first = await conn.fetchrow(
        P.UPSERT_PROTECTION_STATE, *P.protection_state_params(execution_id, book, fence=fence)
    )
    book.on_price("AAPL", D(130), T0 + timedelta(seconds=1))  # the trail ratchets
    second = await conn.fetchrow(
        P.UPSERT_PROTECTION_STATE,
        *P.protection_state_params(execution_id, book, fence=fence, unprotected=1),
    )
    stale = await conn.fetchrow(
        P.UPSERT_PROTECTION_STATE,
        *P.protection_state_params(execution_id, book, fence=Fence(owner_id=OWNER, epoch=2)),
    )
    [row] = await conn.fetch(P.GET_PROTECTION_STATES, [execution_id])
    record = P.protection_state_from_row(row)
    restored = ProtectionBook.from_json(
        record.state, execution_id=execution_id, spec=SPEC, capabilities=FULL
    )

    assert first is not None
    assert second is not None
    assert (first["revision"], second["revision"]) == (1, 2)
    assert stale is None  # another epoch: nothing written
    assert (record.revision, record.unprotected, record.state_version) == (2, 1, 1)
    assert restored.to_json() == book.to_json()
    assert restored.guard("AAPL") == book.guard("AAPL")
    unprotected = await conn.fetch(P.LIST_UNPROTECTED)
    assert execution_id in {r["execution_id"] for r in unprotected}


async def test_the_state_column_reads_the_same_without_a_json_codec(
    conn: asyncpg.Connection, raw_conn: asyncpg.Connection
) -> None:
    execution_id = await new_execution(conn)
    book, _ = armed_book(execution_id)
    await raw_conn.fetchrow(
        P.UPSERT_PROTECTION_STATE, *P.protection_state_params(execution_id, book, fence=None)
    )

    [plain] = await raw_conn.fetch(P.GET_PROTECTION_STATES, [execution_id])
    [decoded] = await conn.fetch(P.GET_PROTECTION_STATES, [execution_id])

    assert isinstance(plain["state"], str)
    assert P.protection_state_from_row(plain).state == P.protection_state_from_row(decoded).state
    assert P.protection_state_from_row(plain).state == json.loads(jsoncodec.dumps(book.to_json()))


async def test_a_batch_of_states_writes_only_the_executions_whose_fence_holds(
    conn: asyncpg.Connection,
) -> None:
    held = await new_execution(conn, epoch=1)
    lost = await new_execution(conn, epoch=7)
    books = [(held, armed_book(held)[0]), (lost, armed_book(lost)[0])]

    written = await conn.fetch(
        P.UPSERT_PROTECTION_STATES,
        *P.protection_states_params(
            [
                (held, books[0][1], Fence(owner_id=OWNER, epoch=1), 0),
                (lost, books[1][1], Fence(owner_id=OWNER, epoch=6), 0),
            ]
        ),
    )

    assert [r["execution_id"] for r in written] == [held]
    assert await conn.fetch(P.GET_PROTECTION_STATES, [lost]) == []


async def test_intents_and_state_commit_together_or_not_at_all(
    conn: asyncpg.Connection,
) -> None:
    execution_id = await new_execution(conn, epoch=5)
    book, legs = armed_book(execution_id)

    async def commit() -> None:
        async with conn.transaction():
            await conn.fetch(P.INSERT_PROTECTIVE_INTENTS, *P.protective_intent_params(legs))
            row = await conn.fetchrow(
                P.UPSERT_PROTECTION_STATE,
                *P.protection_state_params(
                    execution_id, book, fence=Fence(owner_id="worker-b", epoch=5)
                ),
            )
            if row is None:  # the runtime raises LeaseLostError here
                raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        await commit()

    assert await conn.fetch(P.GET_INTENTS_BY_CLIENT_ID, [i.client_order_id for i in legs]) == []
    assert await conn.fetch(P.GET_PROTECTION_STATES, [execution_id]) == []
