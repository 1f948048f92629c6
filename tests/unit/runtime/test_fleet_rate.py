"""The optional fleet-wide order rate limit toward the OMS: ordinary orders wait for its
tokens, closing orders are never throttled (issue 13)."""

from __future__ import annotations

from strategy_worker.domain.orders import OrderPurpose, OrderStatus
from strategy_worker.testing.rig import Rig

from .world import PRICES, admit, approved, control, orders, run


class Bucket:
    """A fleet bucket in memory (the Redis one's rule, on the virtual clock)."""

    def __init__(self, rig: Rig, rate: float, burst: int) -> None:
        self.rig, self.rate, self.burst = rig, rate, burst
        self.tokens, self.at = float(burst), rig.clock.timestamp()
        self.forced = 0

    async def take(self, *, ordinary: int, forced: int) -> tuple[int, float]:
        now = self.rig.clock.timestamp()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens = max(-self.burst, self.tokens - forced)
        self.forced += forced
        granted = max(0, min(ordinary, int(self.tokens)))
        self.tokens -= granted
        return granted, 1 / self.rate

    async def close(self) -> None:
        return None


def test_ordinary_orders_wait_for_fleet_tokens_and_closes_never_do() -> None:
    async def scenario() -> None:
        rig = Rig(seed=51)
        rig.set_prices(PRICES)
        bucket = Bucket(rig, rate=2.0, burst=2)
        async with rig.worker("w1") as app:
            app.worker.engine.order_rate = bucket
            await app.start()
            (execution,) = await admit(
                app, approved({"AAPL": "0.2", "MSFT": "0.2", "GOOGL": "0.2", "AMZN": "0.2"})
            )
            await rig.run_for(0.1)
            assert len(rig.oms.venue.order_log) == 2  # the burst

            await rig.run_for(10)
            assert {o.status for o in orders(rig, execution)} == {OrderStatus.FILLED}

            bucket.tokens = -2.0  # the fleet is busy: a stop must not wait
            await app.worker.handle_control(control(execution, "stop"), "test")
            await rig.run_for(0.1)
            closes = [o for o in orders(rig, execution) if o.purpose is OrderPurpose.CLOSE]
            assert len(closes) == 4
            assert {o.status for o in closes} == {OrderStatus.FILLED}
            assert bucket.forced >= 4

    run(scenario)
