"""The event loop's lag: how late a timer runs, i.e. how long every ready task waited
behind synchronous work (a long step, a garbage collection, a big batch decoded at once).

One task sleeps `interval` seconds over and over and records how much later than asked it
woke up (`strategy_event_loop_lag_seconds`). A stall of the loop shows up as a lag sample
as long as the stall (a timer due during it runs only after it); its frequency is the share
of time the loop spends stalled. It costs one wake-up per interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL_S = 0.05
"""Sampling period: a stall of 50 ms or more is always seen, a shorter one in proportion."""


async def watch_loop_lag(
    observe: Callable[[float], object], *, interval: float = INTERVAL_S
) -> None:
    """Until cancelled: `observe(lag_seconds)` after every sleep of `interval`, measured on
    the loop's own clock (virtual time sees none)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        observe(max(0.0, loop.time() - due))
