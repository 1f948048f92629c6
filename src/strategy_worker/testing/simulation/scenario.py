"""A deterministic simulation of the whole runtime, in the spirit of FoundationDB's and
TigerBeetle's simulators: one seed drives everything.

Several workers (built by the production wiring) share one in-memory database, one paper
venue and one market on a virtual-time loop. Each step the seed picks an action — a new
strategy (some with their own entry/exit rules on one-minute bars the workers build from
the prices they see), a replayed or conflicting message, a price move, a gap, a missing or
stale price, a control request (sometimes from the wrong user), a fault (store outage, a
commit that fails before or after it is applied, an OMS outage or stall, an OMS restart
reusing fill ids, rejects, late and post-cancel fills, overfill reports, an event-broker,
price-source or bar-store outage), a worker crash (kill -9) and restart, a worker frozen
past its lease — then lets virtual time pass and checks every invariant (`invariants.py`).
The trading day rolls during the run. Strategies carry stop-losses, trailing stops and
take-profits, resting at the venue or emulated (`risk_params.protection`); the venue holds
protective orders natively in half the seeds and MARKET/LIMIT only in the others. At the
end every fault heals, every execution is stopped, and the last checks run: every
committed event published once, in order per key; stopped means flat.

The same seed replays exactly: `python -m strategy_worker.testing.simulation --seed N`.
Hooks (`hooks.py`) add to it: `postgres_variant.py` mirrors the store on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from strategy_worker.adapters.retry import seed_jitter
from strategy_worker.domain.money import quantize_price
from strategy_worker.domain.risk.limits import RiskLimits
from strategy_worker.oms_sim.venue import VenueRules
from strategy_worker.runtime.intake import IncomingStrategy
from strategy_worker.runtime.wiring import App
from strategy_worker.store import LedgerCaps
from strategy_worker.testing.memory_store import MemoryStore
from strategy_worker.testing.rig import Rig, default_settings
from strategy_worker.testing.simulation.hooks import SimHooks
from strategy_worker.testing.simulation.invariants import Invariants, InvariantViolation
from strategy_worker.testing.simulation.messages import encode
from strategy_worker.testing.virtual_time import run_in_virtual_time

MIDNIGHT = datetime(2024, 1, 3, 0, 0, tzinfo=UTC)
"""A trading-day roll (trading_day_start 00:00 UTC). Each seed starts 5 to 40 virtual
minutes before it, so a run of a few hundred steps (about half a virtual hour) crosses it
early or late in its life, often with positions open and faults active."""
SYMBOLS = {
    "AAPL": Decimal("175.50"),
    "MSFT": Decimal("410.20"),
    "GOOGL": Decimal("140.10"),
    "AMZN": Decimal("178.30"),
    "NVDA": Decimal("88.00"),
    "JPM": Decimal("195.40"),
    "PENNY": Decimal("0.0450"),
    "KO": Decimal("60.15"),
}
USERS = [uuid.UUID(int=0xA11CE + i) for i in range(3)]
LEASE_S = 15.0
CAPS = LedgerCaps(fleet=Decimal("1500000"), user=Decimal("700000"))
"""Caps that bind: the scenario approves more than they fund."""
HEARTBEAT_S = 5.0
#: Rules on one-minute bars the workers build from the prices they see (no bar topic):
#: short warm-ups, so entries and exits happen within a run.
ENTRY_RULES: list[dict[str, Any]] = [
    {
        "timeframe": "1m",
        "any": [
            {"indicator": "RSI", "period": 3, "op": "<", "value": 45},
            {
                "indicator": "PRICE",
                "op": "crosses_above",
                "value": {"indicator": "SMA", "period": 3},
            },
        ],
    },
    {"timeframe": "1m", "all": [{"indicator": "EMA", "period": 2, "op": ">", "value": "close"}]},
]
EXIT_RULES: list[dict[str, Any]] = [
    {"timeframe": "1m", "all": [{"indicator": "RSI", "period": 3, "op": ">", "value": 65}]},
    {
        "timeframe": "1m",
        "all": [{"indicator": "PRICE", "op": "<", "value": {"indicator": "SMA", "period": 4}}],
    },
]


@dataclass
class SimConfig:
    seed: int
    steps: int = 500
    workers: int = 2
    faults: bool = True


@dataclass
class SimReport:
    seed: int
    steps: int
    virtual_seconds: float
    wall_seconds: float
    executions: int
    orders: int
    fills: int
    events: int
    crashes: int
    digest: str
    actions: dict[str, int] = field(default_factory=dict)
    native: bool = False
    protective: int = 0
    """Protective orders (legs and exits) the venue received."""

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class _Slot:
    name: str
    task: asyncio.Task[None] | None = None
    app: App | None = None
    store: MemoryStore | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    alive: bool = False


@dataclass
class _Message:
    payload: bytes
    kind: str  # "approved" | "control"
    acked: bool = False


class Simulation:
    """One seeded run (see the module docstring)."""

    def __init__(self, config: SimConfig, *, hooks: SimHooks | None = None) -> None:
        self.config = config
        self.hooks = hooks
        self.rng = random.Random(config.seed)
        random.seed(config.seed)  # anything on the global generator
        seed_jitter(config.seed)  # the backoffs' own jitter generator
        self.trace: deque[str] = deque(maxlen=40)
        self.actions: dict[str, int] = {}
        self.crashes = 0
        self._strategies: list[tuple[uuid.UUID, uuid.UUID, bytes]] = []
        self._messages: list[_Message] = []
        self._deliveries: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ the run

    async def run(self) -> SimReport:
        started = time.perf_counter()
        rng = self.rng
        self.native = self.config.seed % 2 == 0
        self.rig = rig = Rig(
            seed=self.config.seed,
            rules=VenueRules(
                slippage_bps=Decimal(rng.choice([0, 2, 5])),
                fee_bps=Decimal(rng.choice([0, 1])),
                partial_fill_slices=rng.choice([1, 1, 2, 3]),
            ),
            lease_seconds=LEASE_S,
            epoch=MIDNIGHT - timedelta(minutes=rng.uniform(5, 40)),
            native_protection=self.native,
            wrap_store=self.hooks.wrap if self.hooks else None,
        )
        if self.hooks:
            await self.hooks.attach(rig.db)
        self.limit_offset = rng.choice([None, None, Decimal("0.01")])
        self.inv = Invariants(
            db=rig.db, oms=rig.oms, events=rig.events, caps=CAPS, now=rig.clock.timestamp
        )
        rig.oms.on_receive = self.inv.on_receipt
        rig.set_prices(SYMBOLS)
        self.slots = [_Slot(f"w{i + 1}") for i in range(self.config.workers)]
        for slot in self.slots:
            self._start(slot)
        await asyncio.sleep(1)
        try:
            for step in range(self.config.steps):
                self._act(step)
                await asyncio.sleep(self._dt())
                await self._verify(step)
            await self._finish()
        finally:
            for slot in self.slots:
                slot.stop.set()
            await asyncio.gather(
                *(s.task for s in self.slots if s.task), *self._deliveries, return_exceptions=True
            )
        db = rig.db
        return SimReport(
            seed=self.config.seed,
            steps=self.config.steps,
            virtual_seconds=asyncio.get_running_loop().time(),
            wall_seconds=time.perf_counter() - started,
            executions=len(db.executions),
            orders=len(db.orders),
            fills=len(db.fill_keys),
            events=len(db.outbox),
            crashes=self.crashes,
            digest=self._digest(),
            actions=dict(sorted(self.actions.items())),
            native=self.native,
            protective=self.inv.protective_exits,
        )

    def _dt(self) -> float:
        return self.rng.choice([0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0])

    async def _verify(self, step: int, *, full: bool = False) -> None:
        """Every invariant, then what the hooks check (the PostgreSQL twin agrees)."""
        if self.hooks:
            await self.hooks.settle()
        self._check(step)
        problems = await self.hooks.check(full=full) if self.hooks else []
        if problems:
            raise InvariantViolation(
                f"seed {self.config.seed} step {step}: the stores differ: "
                + "; ".join(problems[:8])
                + "\nlast actions:\n  "
                + "\n  ".join(self.trace)
            )

    def _check(self, step: int) -> None:
        for slot in self._alive():
            assert slot.app is not None
            failure = slot.app.worker.supervisor.failure
            if failure is not None:
                raise InvariantViolation(
                    f"seed {self.config.seed} step {step}: loop "
                    f"{slot.app.worker.supervisor.failed_loop} of {slot.name} failed: "
                    f"{type(failure).__name__}: {failure}"
                ) from failure
        try:
            self.inv.check(s.app.worker.book for s in self.slots if s.alive and s.app is not None)
        except InvariantViolation as exc:
            raise InvariantViolation(
                f"seed {self.config.seed} step {step}: {exc}\nlast actions:\n  "
                + "\n  ".join(self.trace)
            ) from None

    # ------------------------------------------------------------------ workers

    def _start(self, slot: _Slot) -> None:
        slot.stop = asyncio.Event()
        slot.alive = True
        settings = default_settings(
            slot.name,
            limits=RiskLimits(
                stop_loss_pct=Decimal("0.05"),
                max_total_exposure=CAPS.fleet,
                max_user_exposure=CAPS.user,
                execution_orders_per_second=1.0,
                execution_order_burst=5,
                protection_limit_offset_pct=self.limit_offset,
                protection_native_grace=3.0,
            ),
            position_check_interval=60.0,
            rebalance_interval=300.0,
            reconcile_interval=60.0,
            heartbeat=HEARTBEAT_S,
            lease_seconds=LEASE_S,
            grace_period=20.0,
            close_timeout=5.0,
        )

        async def run() -> None:
            async with self.rig.worker(slot.name, settings=settings) as app:
                slot.app = app
                slot.store = self.rig.stores[slot.name]
                await app.start()
                await slot.stop.wait()

        slot.task = asyncio.create_task(run(), name=f"sim-{slot.name}")

    async def _crash(self, slot: _Slot) -> None:
        """kill -9: the process is gone; nothing it still tries can reach the world."""
        slot.alive = False
        self.crashes += 1
        if slot.store is not None:
            slot.store.crash()
        if slot.app is not None:
            await slot.app.abandon()
        slot.stop.set()
        if slot.task is not None:
            await asyncio.gather(slot.task, return_exceptions=True)
        slot.app = None

    def _alive(self) -> list[_Slot]:
        for slot in self.slots:
            if slot.alive and slot.task is not None and slot.task.done():
                slot.alive = False  # the process exited (e.g. its start failed): a crash
                slot.app = None
        return [s for s in self.slots if s.alive and s.app is not None]

    # ------------------------------------------------------------------ actions

    def _act(self, step: int) -> None:
        rng = self.rng
        choices: list[tuple[str, float]] = [
            ("approve", 3),
            ("prices", 8),
            ("gap", 0.6),
            ("missing_price", 0.4),
            ("control", 1.2),
            ("replay", 0.8),
            ("conflict", 0.2),
            ("redeliver", 0.5),
        ]
        if self.config.faults:
            choices += [
                ("store_outage", 0.3),
                ("commit_fails", 0.6),
                ("oms_outage", 0.3),
                ("oms_stall", 0.3),
                ("oms_restart", 0.2),
                ("oms_quirks", 0.5),
                ("broker_outage", 0.3),
                ("price_outage", 0.2),
                ("bars_outage", 0.2),
                ("crash", 0.35),
                ("restart", 0.8),
                ("freeze", 0.2),
            ]
        names, weights = zip(*choices, strict=True)
        action = rng.choices(names, weights=weights)[0]
        self.actions[action] = self.actions.get(action, 0) + 1
        detail = getattr(self, f"_do_{action}")()
        self.trace.append(f"{step}: {action} {detail or ''}".rstrip())

    def _do_approve(self) -> str:
        rng = self.rng
        symbols = rng.sample(sorted(SYMBOLS), rng.randint(1, 4))
        weight = (Decimal(rng.choice(["0.9", "0.6", "1.0"])) / len(symbols)).quantize(
            Decimal("0.01")
        )
        strategy_id = uuid.UUID(int=rng.getrandbits(128))
        user = rng.choice(USERS)
        message: dict[str, Any] = {
            "type": "strategy.approved",
            "strategy_id": str(strategy_id),
            "user_id": str(user),
            "timestamp": f"2024-01-0{rng.randint(1, 2)}T00:00:0{rng.randint(0, 9)}Z",
            "config": {
                "name": "sim",
                "type": "MOMENTUM",
                "symbols": symbols,
                "allocation": {s: weight for s in symbols},
                "initial_capital": rng.choice(
                    [Decimal("20000"), Decimal("100000"), Decimal("250000")]
                ),
                "risk_params": self._risk_params(),
            },
        }
        rules = rng.random()
        if rules < 0.3:  # the strategy's own rules: entries gate its buys
            message["config"]["entry_rules"] = rng.choice(ENTRY_RULES)
            if rng.random() < 0.6:
                message["config"]["exit_rules"] = rng.choice(EXIT_RULES)
        elif rules < 0.4:  # exit rules only: bought at approval, out once exited
            message["config"]["exit_rules"] = rng.choice(EXIT_RULES)
        payload = encode(message)
        self._strategies.append((strategy_id, user, payload))
        self._deliver(_Message(payload, "approved"))
        return f"{strategy_id.hex[:6]} {symbols}"

    def _risk_params(self) -> dict[str, Any]:
        """A stop-loss always; a trailing stop, a take-profit and where they rest, often."""
        rng = self.rng
        params: dict[str, Any] = {"stop_loss_pct": rng.choice([Decimal("0.03"), Decimal("0.08")])}
        trail = rng.choice([None, Decimal("0.02"), Decimal("0.05")])
        take = rng.choice([None, None, Decimal("0.03"), Decimal("0.10")])
        placement = rng.choice([None, "native", "emulated", "auto"])
        if trail is not None:
            params["trailing_stop_pct"] = trail
        if take is not None:
            params["take_profit_pct"] = take
        if placement is not None:
            params["protection"] = placement
        return params

    def _do_replay(self) -> str:
        if not self._strategies:
            return ""
        _, _, payload = self.rng.choice(self._strategies)
        self._deliver(_Message(payload, "approved"))
        return "approved again"

    def _do_conflict(self) -> str:
        if not self._strategies:
            return ""
        _, _, payload = self.rng.choice(self._strategies)
        changed = json.loads(payload)
        changed["config"]["name"] = "changed under the same key"
        self._deliver(_Message(json.dumps(changed).encode(), "approved"))
        return "same key, other body"

    def _do_redeliver(self) -> str:
        pending = [m for m in self._messages if not m.acked]
        if not pending:
            return ""
        message = self.rng.choice(pending)
        self._deliver(message)
        return message.kind

    def _do_prices(self) -> str:
        rng = self.rng
        moved = {}
        for symbol in rng.sample(sorted(SYMBOLS), rng.randint(1, 4)):
            current = self.rig.prices.prices.get(symbol, SYMBOLS[symbol])
            step = Decimal(str(round(rng.gauss(0, 0.012), 4)))
            moved[symbol] = max(quantize_price(current * (1 + step)), Decimal("0.0001"))
        self.rig.set_prices(moved, announce=rng.random() < 0.8)
        return " ".join(f"{s}={p}" for s, p in moved.items())

    def _do_gap(self) -> str:
        symbol = self.rng.choice(sorted(SYMBOLS))
        current = self.rig.prices.prices.get(symbol, SYMBOLS[symbol])
        factor = Decimal(self.rng.choice(["0.80", "0.88", "1.12"]))
        price = quantize_price(current * factor)
        self.rig.set_prices({symbol: price})
        return f"{symbol} {current} -> {price}"

    def _do_missing_price(self) -> str:
        symbol = self.rng.choice(sorted(SYMBOLS))
        self.rig.prices.forget(symbol)
        return symbol

    def _do_control(self) -> str:
        executions = sorted(self.rig.db.executions.values(), key=lambda e: e.record.execution_id)
        if not executions:
            return ""
        record = self.rng.choice(executions).record
        action = self.rng.choice(["stop", "pause", "resume", "resume", "pause"])
        user = record.user_id if self.rng.random() < 0.9 else self.rng.choice(USERS)
        message = {
            "type": "strategy.control",
            "request_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "execution_id": str(record.execution_id),
            "user_id": str(user),
            "action": action,
            "timestamp": "2024-01-02T00:00:00Z",
        }
        self._deliver(_Message(json.dumps(message).encode(), "control"))
        return f"{action} {record.execution_id.hex[:6]}"

    def _now(self) -> float:
        return self.rig.clock.timestamp()

    def _do_store_outage(self) -> str:
        seconds = self.rng.uniform(1, 30)
        self.rig.db.faults.down_until = self._now() + seconds
        return f"{seconds:.0f}s"

    def _do_commit_fails(self) -> str:
        applied = self.rng.random() < 0.5
        self.rig.db.faults.fail_next_commit(applied=applied)
        return "after applying" if applied else "before applying"

    def _do_oms_outage(self) -> str:
        seconds = self.rng.uniform(1, 20)
        self.rig.oms.down_until = self._now() + seconds
        return f"{seconds:.0f}s"

    def _do_oms_stall(self) -> str:
        oms = self.rig.oms
        oms.stall_s = 0.0 if oms.stall_s else self.rng.uniform(0.5, 3)
        return f"{oms.stall_s:.1f}s"

    def _do_oms_restart(self) -> str:
        self.rig.oms.restart()
        return ""

    def _do_oms_quirks(self) -> str:
        oms = self.rig.oms
        oms.reject_rate = self.rng.choice([0.0, 0.0, 0.1, 0.3])
        oms.late_fill_on_cancel = self.rng.choice([0.0, 0.5, 1.0])
        oms.overfill_rate = self.rng.choice([0.0, 0.0, 0.0, 0.05])
        return f"reject {oms.reject_rate} late {oms.late_fill_on_cancel} over {oms.overfill_rate}"

    def _do_broker_outage(self) -> str:
        seconds = self.rng.uniform(1, 30)
        self.rig.events.down_until = self._now() + seconds
        return f"{seconds:.0f}s"

    def _do_price_outage(self) -> str:
        seconds = self.rng.uniform(1, 20)
        self.rig.prices.down_until = self._now() + seconds
        return f"{seconds:.0f}s"

    def _do_bars_outage(self) -> str:
        seconds = self.rng.uniform(1, 30)
        self.rig.market.down_until = self._now() + seconds
        return f"{seconds:.0f}s"

    def _do_crash(self) -> str:
        alive = self._alive()
        if len(alive) <= 1 and self.rng.random() < 0.5:
            return "spared the last worker"
        if not alive:
            return ""
        slot = self.rng.choice(alive)
        task = asyncio.create_task(self._crash(slot))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return slot.name

    def _do_restart(self) -> str:
        self._alive()
        dead = [s for s in self.slots if not s.alive and (s.task is None or s.task.done())]
        if not dead:
            return ""
        slot = self.rng.choice(dead)
        self._start(slot)
        return slot.name

    def _do_freeze(self) -> str:
        alive = [s for s in self._alive() if s.store is not None]
        if not alive:
            return ""
        slot = self.rng.choice(alive)
        seconds = self.rng.uniform(LEASE_S + 1, LEASE_S * 3)
        assert slot.store is not None
        slot.store.frozen_until = self._now() + seconds
        return f"{slot.name} {seconds:.0f}s"

    # ------------------------------------------------------------------ delivery

    def _deliver(self, message: _Message) -> None:
        """Like a consumer group: any live worker gets it; until a handler returns the
        message is not acknowledged and will be redelivered (perhaps elsewhere)."""
        if message not in self._messages:
            self._messages.append(message)
        alive = self._alive()
        if not alive:
            return
        slot = self.rng.choice(alive)

        async def handle() -> None:
            app = slot.app
            if app is None:
                return
            try:
                if message.kind == "approved":
                    await app.worker.handle_strategies([IncomingStrategy(message.payload, "sim")])
                else:
                    await app.worker.handle_control(message.payload, "sim")
            except Exception:  # the consumer retries it later (not committed)
                return
            if slot.alive:
                message.acked = True

        task = asyncio.create_task(handle())
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    # ------------------------------------------------------------------ the end

    async def _finish(self) -> None:
        rig = self.rig
        rig.db.faults.down_until = float("-inf")
        rig.db.faults.commit_failures.clear()
        rig.oms.down_until = float("-inf")
        rig.oms.stall_s = 0.0
        rig.oms.reject_rate = 0.0
        rig.events.down_until = float("-inf")
        rig.prices.down_until = float("-inf")
        rig.market.down_until = float("-inf")
        for slot in self.slots:
            if slot.store is not None:
                slot.store.frozen_until = float("-inf")
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        self._alive()
        for slot in self.slots:
            if not slot.alive:
                if slot.task is not None:
                    await asyncio.gather(slot.task, return_exceptions=True)
                self._start(slot)
        rig.set_prices({s: rig.prices.prices.get(s, p) for s, p in SYMBOLS.items()})
        for message in [m for m in self._messages if not m.acked]:
            self._deliver(message)
        await asyncio.sleep(LEASE_S + 2 * HEARTBEAT_S)
        await self._verify(self.config.steps)
        for ex in sorted(rig.db.executions.values(), key=lambda e: e.record.execution_id):
            if ex.record.state.status.is_running:
                self._deliver(
                    _Message(
                        json.dumps(
                            {
                                "type": "strategy.control",
                                "request_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                                "execution_id": str(ex.record.execution_id),
                                "user_id": str(ex.record.user_id),
                                "action": "stop",
                                "timestamp": "2024-01-02T00:00:00Z",
                            }
                        ).encode(),
                        "control",
                    )
                )
        for _ in range(240):  # stops complete within four virtual minutes once healed
            await asyncio.sleep(1)
            rig.set_prices({s: rig.prices.prices.get(s, p) for s, p in SYMBOLS.items()})
            if not any(e.record.state.status.is_running for e in rig.db.executions.values()):
                break
        await self._verify(self.config.steps + 1)
        running = [e for e in rig.db.executions.values() if e.record.state.status.is_running]
        if running:
            raise InvariantViolation(
                f"seed {self.config.seed}: {len(running)} execution(s) not stopped after "
                "every fault healed and a stop was requested: "
                + "; ".join(self._describe(e.record.execution_id) for e in running[:3])
            )
        # The relay drains the outbox; one that was backing off from a broker outage
        # (capped at 10 s) tries again within that cap.
        for _ in range(15):
            await asyncio.sleep(1)
            if not rig.db.unpublished:
                break
        await asyncio.sleep(1)
        self.inv.final([p.event.event_id for p in rig.events.published])
        await self._verify(self.config.steps + 2, full=True)

    def _describe(self, execution_id: uuid.UUID) -> str:
        """Where one execution stands, in the store, at the OMS and in its worker."""
        ex = self.rig.db.executions[execution_id]
        rec = ex.record
        orders = [self.rig.db.orders[c] for c in ex.order_ids]
        live = [
            f"{o.client_order_id[-6:]} {o.side} {o.quantity} {o.status}"
            for o in orders
            if not o.status.is_terminal
        ]
        oms = self.rig.oms.venue.execution_book(execution_id).net_positions()
        runners = [
            (s.name, r.dirty, r.model.version)
            for s in self._alive()
            if s.app is not None
            for r in s.app.worker.book
            if r.execution_id == execution_id
        ]
        runtime = (rec.state.positions or {}).get("runtime")
        return (
            f"{execution_id} {rec.state.status} {rec.state.trading_state} owner={rec.owner_id}"
            f"@{rec.lease_epoch} v{rec.version} held={(rec.state.positions or {}).get('positions')}"
            f" oms={oms} live={live} runners={runners} plans={runtime}"
        )

    def _digest(self) -> str:
        """A fingerprint of the outcome: two runs of one seed must give the same."""
        db = self.rig.db
        parts = [
            f"{eid}:{ex.record.version}:{ex.record.state.status}:{ex.record.state.cash}"
            for eid, ex in sorted(db.executions.items())
        ]
        parts += sorted(f"{c}:{o.status}:{o.filled_quantity}" for c, o in db.orders.items())
        parts.append(str(len(self.rig.events.published)))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def run_simulation(config: SimConfig) -> SimReport:
    """Run one seed on its own virtual-time loop (deterministic)."""
    return run_in_virtual_time(Simulation(config).run)
