"""The `strategy-worker` command: run, api, token, paper, oms-sim, db migrate and bars import."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from strategy_worker import __version__
from strategy_worker.config_loader import load_config
from strategy_worker.errors import StrategyWorkerError

T = TypeVar("T")

app = typer.Typer(
    help="Strategy Worker: the execution engine of the AIPX trading platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
bars_app = typer.Typer(help="Market bar commands.", no_args_is_help=True)
app.add_typer(bars_app, name="bars")


def _fail(exc: BaseException) -> None:
    """One line on stderr, never wrapped or decorated: operators grep for it."""
    typer.echo(f"error: {exc}", err=True)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", envvar="CONFIG_PATH", help="YAML config (default ./config/config.yaml)."
    ),
]


EnvFileOption = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        help="Variables to read as if set in the environment, which wins (default ./.env, "
        "skipped when absent).",
    ),
]


def _load(config: Path | None, env_file: Path | None) -> Any:
    """The config from the YAML, ./.env (or --env-file) and the environment; exit 2 on error."""
    from strategy_worker.config_loader import DEFAULT_ENV_FILE

    try:
        return load_config(
            config,
            env_file=env_file if env_file is not None else DEFAULT_ENV_FILE,
            env_file_required=env_file is not None,
        )
    except StrategyWorkerError as exc:
        _fail(exc)
        raise typer.Exit(2) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (faster gRPC/Kafka/asyncpg I/O); a project error is one line, exit 2."""
    import uvloop

    try:
        return uvloop.run(coro)
    except StrategyWorkerError as exc:
        _fail(exc)
        raise typer.Exit(2) from None


def _configure_logging(config: Any, json_output: bool | None = None) -> None:
    from strategy_worker.log import configure_logging

    use_json = config.logging.json_output if json_output is None else json_output
    configure_logging(config.logging.level, json_output=use_json)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '5h', '1d' -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 90s, 30m, 5h)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def parse_speed(text: str) -> float | None:
    """'300' -> 300.0; 'max' -> None (as fast as the engine goes)."""
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"not a speed: {text!r} (a number, or max)") from None
    if not value > 0 or value == float("inf"):
        raise typer.BadParameter(f"speed must be a positive number, or max: {text!r}")
    return value


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def run(config: ConfigOption = None, env_file: EnvFileOption = None) -> None:
    """Run the worker: Kafka in and out, the OMS over gRPC, PostgreSQL, Redis prices."""
    from strategy_worker.runtime import app as runtime_app

    cfg = _load(config, env_file)
    _configure_logging(cfg)
    raise typer.Exit(_run(runtime_app.run_worker(cfg)))


@app.command()
def api(config: ConfigOption = None) -> None:
    """Run the API and dashboard (REST, WebSocket); reads PostgreSQL, writes strategy.control."""
    from strategy_worker.api.server import run_api

    try:
        cfg = load_config(config)
    except StrategyWorkerError as exc:
        _fail(exc)
        raise typer.Exit(2) from None
    _configure_logging(cfg)
    raise typer.Exit(_run(run_api(cfg)))


@app.command()
def token(
    user: Annotated[str, typer.Option("--user", help="The user id (UUID) the token is for.")],
    operator: Annotated[bool, typer.Option(help="Grant the operator role.")] = False,
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 30m, 12h.")] = "12h",
    key_file: Annotated[
        Path | None, typer.Option(help="Private key (PEM) to sign with, outside development.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Print a bearer token for the API (development: signed with the .dev-keys/ key)."""
    import uuid
    from datetime import UTC, datetime

    from strategy_worker.auth.tokens import dev_signing_key, issue_token

    try:
        user_id = uuid.UUID(user)
    except ValueError:
        raise typer.BadParameter(f"not a UUID: {user!r}", param_hint="--user") from None
    try:
        cfg = load_config(config)
        key = dev_signing_key(cfg, key_file)
    except StrategyWorkerError as exc:
        _fail(exc)
        raise typer.Exit(2) from None
    auth = cfg.api.auth
    typer.echo(
        issue_token(
            user_id=user_id,
            operator=operator,
            key=key,
            algorithm=auth.algorithm,
            now=datetime.now(UTC),
            ttl_s=parse_duration(ttl),
            issuer=auth.issuer,
            audience=auth.audience,
            roles_claim=auth.roles_claim,
            operator_role=auth.operator_role,
        )
    )


@app.command()
def paper(
    strategies: Annotated[
        list[Path] | None,
        typer.Argument(help="strategy.approved messages: files (JSON or JSON lines), or - "),
    ] = None,
    duration: Annotated[
        str, typer.Option(help="Simulated time to run, e.g. 5h, 900d (years of bars).")
    ] = "5h",
    speed: Annotated[
        str,
        typer.Option(
            help="Simulated seconds per real second (300: 5 h in 1 min), or max: step from "
            "one bar of the replayed file to the next as fast as the engine goes."
        ),
    ] = "300",
    prices: Annotated[
        Path | None,
        typer.Option(
            help="Replay this file on its own timestamps: prices (timestamp,symbol,price; "
            "CSV/JSONL) or OHLCV bars (symbol,date|start,open,high,low,close[,volume])."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random-walk prices.")] = 42,
    events: Annotated[
        Path | None, typer.Option(help="Write execution events here as JSON lines.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the embedded PostgreSQL data here.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON; no live view.")
    ] = False,
    keep_open: Annotated[
        bool, typer.Option(help="Leave positions open at the end instead of closing them.")
    ] = False,
    dashboard: Annotated[
        bool,
        typer.Option(help="Serve the web dashboard on loopback; prints its URL with a token."),
    ] = False,
    dashboard_port: Annotated[int, typer.Option(help="The dashboard's port (0: a free one).")] = 0,
    config: ConfigOption = None,
) -> None:
    """Paper trading on embedded defaults: nothing to install or start by hand."""
    # The embedded database forks helper processes; gRPC's C core logs that at INFO.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from strategy_worker.messages import encode_json
    from strategy_worker.paper.app import PaperOptions, run_paper

    examples = Path(__file__).resolve().parents[2] / "examples"
    if not strategies:
        strategies = sorted(examples.glob("*.json"))
        if prices is None and (examples / "prices.csv").exists():
            prices = examples / "prices.csv"
        if not strategies:
            raise typer.BadParameter("no strategy files given (and no examples/ found)")
    try:
        cfg = load_config(config) if config is not None else load_config(_default_config())
    except StrategyWorkerError as exc:
        _fail(exc)
        raise typer.Exit(2) from None
    _configure_logging(cfg, json_output=True)
    _quiet_logs()
    options = PaperOptions(
        strategies=strategies,
        duration_s=parse_duration(duration),
        speed=parse_speed(speed),
        seed=seed,
        prices_file=prices,
        events_file=events,
        data_dir=data_dir,
        live=not json_output,
        keep_open=keep_open,
        config=cfg,
        dashboard=dashboard,
        dashboard_port=dashboard_port,
    )
    result = _run(run_paper(options))
    if json_output:
        doc: dict[str, Any] = {
            "executions": [s.to_json() for s in result.summaries],
            "dead_letters": result.dead_letters,
            "consistent": result.consistent,
        }
        if result.replay is not None:
            replay = result.replay  # measurements, written as exact decimals of their text
            doc["replay"] = {
                "bars": replay.bars,
                "seconds": Decimal(f"{replay.seconds:.3f}"),
                "bars_per_second": Decimal(f"{replay.bars_per_second:.1f}"),
            }
        sys.stdout.write(encode_json(doc, indent=2) + "\n")
    else:
        _print_summary(result)
    raise typer.Exit(result.exit_code)


def _default_config() -> Path | None:
    path = Path("config/config.yaml")
    return path if path.exists() else None


def _quiet_logs() -> None:
    """Paper mode shows the live view; only warnings and errors go to the log (stderr)."""
    import logging

    logging.getLogger().setLevel(logging.WARNING)


def _print_summary(result: Any) -> None:
    from strategy_worker.domain.money import quantize_cash

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a log file or a pipe: keep every column readable
    table = Table(title="paper trading summary")
    for column in (
        "strategy",
        "status",
        "orders",
        "filled",
        "fills",
        "realized",
        "unrealized",
        "fees",
        "total P&L",
        "trades W/L",
        "risk events",
        "fills replay",
    ):
        table.add_column(column)
    # Exact figures are in --json; the table shows cents (half-even).
    for s in result.summaries:
        table.add_row(
            s.name,
            s.status,
            str(s.orders),
            str(s.orders_filled),
            str(s.fills),
            str(quantize_cash(s.realized_pnl)),
            str(quantize_cash(s.unrealized_pnl)),
            str(quantize_cash(s.fees)),
            str(quantize_cash(s.total_pnl)),
            f"{s.trades_won}/{s.trades_lost}",
            str(s.risk_events),
            "ok" if s.consistent else "MISMATCH",
        )
    out.print(table)
    for s in result.summaries:
        for mismatch in s.mismatches:
            out.print(f"MISMATCH {s.name}: {mismatch}", markup=False, highlight=False)
    if result.dead_letters:
        out.print(f"{result.dead_letters} message(s) rejected (see the events file / stderr)")
    if result.replay is not None:
        replay = result.replay
        out.print(
            f"{replay.bars} bars replayed in {replay.seconds:.1f} s "
            f"({replay.bars_per_second:,.0f} bars/s)"
        )


@app.command("oms-sim")
def oms_sim(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0: any free port).")] = 50051,
    seed: Annotated[int, typer.Option(help="Seed of the random-walk prices.")] = 42,
    prices: Annotated[Path | None, typer.Option(help="Replay prices from this file.")] = None,
    native_protection: Annotated[
        bool,
        typer.Option(
            help="Hold stops, trailing stops, OCO groups and brackets natively; off, report "
            "them unsupported so the worker emulates them."
        ),
    ] = True,
) -> None:
    """Run the paper-trading OMS over gRPC (the same one paper mode and the tests use)."""
    from strategy_worker.log import configure_logging
    from strategy_worker.oms_sim.config import OmsSimConfig, PricesConfig
    from strategy_worker.oms_sim.server import serve_forever

    configure_logging("INFO", json_output=True)
    price_config = PricesConfig(kind="replay", file=prices) if prices else PricesConfig(seed=seed)
    config = OmsSimConfig(
        host=host, port=port, prices=price_config, native_protection=native_protection
    )
    with _suppress_interrupt():
        _run(serve_forever(config))


def _suppress_interrupt() -> Any:
    import contextlib

    return contextlib.suppress(KeyboardInterrupt)


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None, env_file: EnvFileOption = None) -> None:
    """Apply pending migrations (safe to run twice, and from two processes at once)."""
    from strategy_worker.adapters.postgres import migrate

    cfg = _load(config, env_file)
    from strategy_worker.log import configure_logging

    configure_logging("WARNING", json_output=cfg.logging.json_output)
    db = cfg.database
    applied = _run(migrate(db.dsn(), hint=db.setting_hint()))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@bars_app.command("import")
def bars_import(
    file: Annotated[Path, typer.Argument(help="CSV of OHLCV bars or of timestamp,symbol,price.")],
    timeframe: Annotated[
        list[str] | None,
        typer.Option(
            "--timeframe",
            "-t",
            help="Bars to build from a price file (repeatable); for an OHLCV file, the "
            "timeframe of rows without a timeframe column. Default 1d.",
        ),
    ] = None,
    complete_until: Annotated[
        str | None,
        typer.Option(
            help="Price files: the prices hold until this ISO time, so bars ending by then "
            "are complete (default: the last bar of each symbol is left out)."
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Overwrite stored bars that differ (default: keep them).")
    ] = False,
    skip_invalid: Annotated[
        bool, typer.Option(help="Skip malformed rows (counted) instead of stopping.")
    ] = False,
    source: Annotated[str, typer.Option(help="The source recorded with each bar.")] = "import",
    config: ConfigOption = None,
) -> None:
    """Import bars into PostgreSQL (market_bars): history for warm-up and paper mode."""
    from datetime import UTC, datetime

    from strategy_worker.adapters.bar_files import BarFile
    from strategy_worker.adapters.postgres.bar_import import import_bars
    from strategy_worker.domain.signals.timeframes import TIMEFRAME_HINT, parse_timeframe

    frames = []
    for text in timeframe or ["1d"]:
        parsed = parse_timeframe(text)
        if parsed is None:
            raise typer.BadParameter(f"{text!r}: {TIMEFRAME_HINT}", param_hint="--timeframe")
        frames.append(parsed)
    until = None
    if complete_until is not None:
        try:
            until = datetime.fromisoformat(complete_until)
        except ValueError:
            raise typer.BadParameter(
                "not an ISO 8601 time", param_hint="--complete-until"
            ) from None
        until = until.replace(tzinfo=UTC) if until.tzinfo is None else until
    try:
        cfg = load_config(config)
        bar_file = BarFile(file, timeframes=frames, complete_until=until, skip_invalid=skip_invalid)
    except StrategyWorkerError as exc:
        _fail(exc)
        raise typer.Exit(2) from None
    from strategy_worker.log import configure_logging

    configure_logging("WARNING", json_output=cfg.logging.json_output)
    result = _run(import_bars(cfg.database, bar_file, source=source, replace=replace))
    typer.echo(
        f"{file}: {result.read} bars ({bar_file.kind}), {result.written} written, "
        f"{result.read - result.written} already stored, {result.skipped} rows skipped"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
