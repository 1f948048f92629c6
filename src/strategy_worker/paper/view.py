"""The live terminal view of a paper run (rich): executions, positions, P&L, risk events."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from strategy_worker.domain.money import quantize_cash

if TYPE_CHECKING:
    from strategy_worker.domain.clock import Clock
    from strategy_worker.runtime.book import ExecutionBook


class LiveView:
    """Redrawn a few times a second while the run lasts; off when not on a terminal."""

    def __init__(self, book: ExecutionBook, clock: Clock, *, enabled: bool) -> None:
        self._book = book
        self._clock = clock
        console = Console(stderr=True)
        self._live: Live | None = None
        if enabled and console.is_terminal:
            self._live = Live(console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def render(self) -> Group:
        title = f"paper trading — simulated time {self._clock.now():%Y-%m-%d %H:%M:%S} UTC"
        executions = Table(title=title, expand=True)
        for column in (
            "execution",
            "strategy",
            "status",
            "trading",
            "equity",
            "realized",
            "unrealized",
            "trades W/L",
            "orders",
        ):
            executions.add_column(column)
        positions = Table(title="positions", expand=True)
        for column in ("execution", "symbol", "qty", "avg cost", "mark", "weight", "unrealized"):
            positions.add_column(column)
        for runner in self._book:
            val = runner.valuation()
            model = runner.model
            short = str(runner.execution_id)[:8]
            pf = model.portfolio
            executions.add_row(
                short,
                runner.info.name,
                "stopping" if model.stopping else str(model.status),
                model.risk.state.value,
                str(quantize_cash(val.equity)),
                str(quantize_cash(pf.realized_pnl)),
                str(quantize_cash(val.unrealized_pnl)),
                f"{pf.winning_trades}/{pf.losing_trades}",
                str(len(model.orders)),
            )
            for sym, pos in val.positions.items():
                positions.add_row(
                    short,
                    sym,
                    str(pos.quantity),
                    str(pos.avg_cost),
                    str(pos.mark),
                    f"{pos.weight * 100:.1f}%",
                    str(quantize_cash(pos.unrealized_pnl)),
                )
        return Group(executions, positions)
