"""Bar files: OHLCV bars or plain prices from CSV, as closed bars in time order.

Two kinds of CSV file, told apart by their header (names are case-insensitive, any order,
extra columns ignored):

- **OHLCV bars**: `symbol`, a start column (`start`, `timestamp` or `date`), `open`,
  `high`, `low`, `close`, and optionally `volume` (default 0) and `timeframe` (default:
  the reader's `timeframe`, `1d` unless told). A start is ISO 8601 with a zone, a naive
  timestamp (read as UTC) or a date (`2024-01-02`: 00:00 UTC, the `1d` bar of that day);
  it must be a bar start of its timeframe.
- **Prices**: `timestamp`, `symbol`, `price` (the paper price file's format,
  `oms_sim/prices.py`): each row is a tick, turned into bars of each requested timeframe by
  the same `BarBuilder` as live price announcements. A bar is complete once a later tick of
  its symbol shows its end has passed; the last bar of each symbol is complete only if the
  reader is told until when the file's prices hold (`complete_until`), else it is left out.

Each row is validated like a bar message (`validate_bar`): a malformed row stops the read
with `BarFileError` naming the row, field and code, or is skipped and counted when
`skip_invalid` is set. Rows may come in any order; bars come out sorted by (end, symbol,
timeframe), each exactly once (a repeated identical row is dropped, two different rows for
one bar are an error: `conflicting_rows`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path

from strategy_worker.domain.rejection import Rejection
from strategy_worker.domain.signals.bars import ZERO, Bar, make_bar
from strategy_worker.domain.signals.builder import BarBuilder
from strategy_worker.domain.signals.timeframes import (
    TIMEFRAME_HINT,
    Timeframe,
    parse_timeframe,
    timeframe,
)
from strategy_worker.domain.strategy import SYMBOL_RE
from strategy_worker.errors import ValidationError

DAILY = timeframe("1d")
_START_COLUMNS = ("start", "timestamp", "date")


class BarFileKind(StrEnum):
    OHLCV = "ohlcv"
    PRICES = "prices"


class BarFileError(ValidationError):
    """A bar file that cannot be read: where (row), which field, and the stable code."""

    def __init__(self, path: Path, row: int, rejection: Rejection) -> None:
        super().__init__(
            f"{path}: row {row}: {rejection.path}: {rejection.message} ({rejection.code})"
        )
        self.row = row
        self.rejection = rejection


def detect_kind(header: Sequence[str]) -> BarFileKind | None:
    """The kind of file a CSV header announces, or None."""
    names = {name.strip().lower() for name in header}
    if {"open", "high", "low", "close", "symbol"} <= names and names & set(_START_COLUMNS):
        return BarFileKind.OHLCV
    if {"timestamp", "symbol", "price"} <= names:
        return BarFileKind.PRICES
    return None


class BarFile:
    """A bar file read once into memory; iterate it for its bars (earliest end first)."""

    def __init__(
        self,
        path: Path,
        *,
        timeframes: Sequence[Timeframe] = (DAILY,),
        complete_until: datetime | None = None,
        skip_invalid: bool = False,
    ) -> None:
        """`timeframes`: the bars to build from a price file, and for an OHLCV file the
        timeframe of rows without a `timeframe` column (the first one)."""
        if not timeframes:
            raise ValueError("at least one timeframe is needed")
        self.path = path
        self.skipped = 0
        self._skip = skip_invalid
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                header = [name.strip().lower() for name in reader.fieldnames or []]
                kind = detect_kind(header)
                if kind is None:
                    raise BarFileError(
                        path,
                        1,
                        Rejection(
                            "unknown_file_kind",
                            "header",
                            "want symbol,start|timestamp|date,open,high,low,close[,volume]"
                            "[,timeframe] or timestamp,symbol,price",
                        ),
                    )
                self.kind = kind
                rows = [
                    {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                    for row in reader
                ]
        except OSError as exc:
            raise BarFileError(path, 0, Rejection("unreadable", "file", str(exc))) from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BarFileError(path, 0, Rejection("invalid_csv", "file", str(exc))) from exc
        if kind is BarFileKind.OHLCV:
            self._bars = self._ohlcv(rows, timeframes[0])
        else:
            self._bars = self._prices(rows, timeframes, complete_until)

    @property
    def bars(self) -> tuple[Bar, ...]:
        return self._bars

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({bar.symbol for bar in self._bars}))

    @property
    def first_time(self) -> datetime | None:
        """When the file's market opens: the start of its first bar (a paper clock's start)."""
        return min((bar.start for bar in self._bars), default=None)

    @property
    def last_time(self) -> datetime | None:
        """The end of its last bar (how long a replay runs)."""
        return self._bars[-1].end if self._bars else None

    def closes(self) -> Iterator[tuple[datetime, str, Decimal]]:
        """(bar end, symbol, close) in time order: the marks an OHLCV file implies (a
        bar's close is known at its end), for a paper price source."""
        for bar in self._bars:
            yield bar.end, bar.symbol, bar.close

    def __iter__(self) -> Iterator[Bar]:
        return iter(self._bars)

    def __len__(self) -> int:
        return len(self._bars)

    # ------------------------------------------------------------------ kinds

    def _ohlcv(self, rows: list[dict[str, str]], default_tf: Timeframe) -> tuple[Bar, ...]:
        start_column = next(c for c in _START_COLUMNS if c in rows[0]) if rows else "start"
        found: dict[tuple[str, Timeframe, datetime], Bar] = {}
        for number, row in enumerate(rows, start=2):
            bar = self._row_bar(row, start_column, default_tf, number)
            if bar is None:
                continue
            slot = (bar.symbol, bar.timeframe, bar.start)
            known = found.get(slot)
            if known is not None and not known.same_content(bar):
                self._fail(
                    number,
                    Rejection(
                        "conflicting_rows",
                        start_column,
                        "another row has other numbers for this bar",
                    ),
                )
                continue
            found[slot] = bar
        return tuple(sorted(found.values(), key=_order))

    def _row_bar(
        self, row: dict[str, str], start_column: str, default_tf: Timeframe, number: int
    ) -> Bar | None:
        try:
            tf = default_tf
            if row.get("timeframe"):
                parsed_tf = parse_timeframe(row["timeframe"])
                if parsed_tf is None:
                    raise _RowError("unknown_timeframe", "timeframe", TIMEFRAME_HINT)
                tf = parsed_tf
            symbol = _symbol(row)
            start = _moment(row.get(start_column, ""), start_column)
            made = make_bar(
                symbol=symbol,
                timeframe=tf,
                start=start,
                open=_decimal(row, "open"),
                high=_decimal(row, "high"),
                low=_decimal(row, "low"),
                close=_decimal(row, "close"),
                volume=_decimal(row, "volume") if row.get("volume") else ZERO,
            )
        except _RowError as exc:
            made = exc.rejection
        if isinstance(made, Rejection):
            self._fail(number, made)
            return None
        return made

    def _prices(
        self,
        rows: list[dict[str, str]],
        timeframes: Sequence[Timeframe],
        complete_until: datetime | None,
    ) -> tuple[Bar, ...]:
        ticks: list[tuple[datetime, str, Decimal]] = []
        for number, row in enumerate(rows, start=2):
            try:
                at = _moment(row.get("timestamp", ""), "timestamp")
                symbol = _symbol(row)
                price = _decimal(row, "price")
                if price <= ZERO:
                    raise _RowError("invalid_price", "price", "must be positive")
            except _RowError as exc:
                self._fail(number, exc.rejection)
                continue
            ticks.append((at, symbol, price))
        ticks.sort(key=lambda tick: tick[0])
        builder = BarBuilder(timeframes)
        bars: list[Bar] = []
        for at, symbol, price in ticks:
            bars.extend(builder.on_tick(symbol, price, at))
        if complete_until is not None:
            bars.extend(builder.advance(complete_until))
        return tuple(sorted(bars, key=_order))

    def _fail(self, row: int, rejection: Rejection) -> None:
        if not self._skip:
            raise BarFileError(self.path, row, rejection)
        self.skipped += 1


class _RowError(Exception):
    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(code, field, message)


def _symbol(row: dict[str, str]) -> str:
    symbol = row.get("symbol", "")
    if SYMBOL_RE.fullmatch(symbol) is None:
        raise _RowError("invalid_symbol", "symbol", f"{symbol[:20]!r} is not a symbol")
    return symbol


def _decimal(row: dict[str, str], column: str) -> Decimal:
    text = row.get(column, "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _RowError("wrong_type", column, f"{text[:20]!r} is not a number") from None
    if not value.is_finite():
        raise _RowError("wrong_type", column, "must be a finite number")
    return value


def _moment(text: str, column: str) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _RowError("invalid_timestamp", column, f"{text[:30]!r} is not ISO 8601") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _order(bar: Bar) -> tuple[datetime, str, Timeframe]:
    return bar.end, bar.symbol, bar.timeframe
