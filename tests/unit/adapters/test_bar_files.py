"""Bar files: OHLCV or prices, any row order, exact numbers, malformed rows named."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from strategy_worker.adapters.bar_files import BarFile, BarFileError, BarFileKind
from strategy_worker.domain.signals.timeframes import timeframe


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(text)
    return path


def test_ohlcv_rows_in_any_order_come_out_in_time_order_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "Symbol,Date,Open,High,Low,Close,Volume,Note\n"
        "MSFT,2024-01-03,10,11,9,10.5,100,x\n"
        "AAPL,2024-01-02,20.10,21,19,20,,y\n"
        "MSFT,2024-01-02,9,10,8,9.5,50,z\n"
        "MSFT,2024-01-02,9,10,8,9.50,50,repeat\n",
    )
    bars = BarFile(path)
    assert bars.kind is BarFileKind.OHLCV
    assert [(b.symbol, b.start.day) for b in bars] == [("AAPL", 2), ("MSFT", 2), ("MSFT", 3)]
    assert bars.bars[0].open == Decimal("20.10")
    assert bars.bars[0].volume == 0
    assert bars.symbols == ("AAPL", "MSFT")


def test_a_timeframe_column_and_intraday_starts(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "start,symbol,timeframe,open,high,low,close\n"
        "2024-01-02T14:30:00Z,AAPL,5m,1,2,1,2\n2024-01-02T10:00:00-05:00,AAPL,1h,1,1,1,1\n",
    )
    first, second = BarFile(path)
    assert (first.timeframe, second.timeframe) == (timeframe("5m"), timeframe("1h"))
    assert second.start == datetime(2024, 1, 2, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "row", "code"),
    [
        ("date,symbol,open,high,low,close\n2024-01-02,AAPL,1,x,1,1\n", 2, "wrong_type"),
        (
            "date,symbol,open,high,low,close\n2024-01-02T01:00:00Z,AAPL,1,1,1,1\n",
            2,
            "misaligned_start",
        ),
        (
            "date,symbol,open,high,low,close\n2024-01-02,AAPL,1,1,1,1\n2024-01-02,AAPL,1,2,1,1\n",
            3,
            "conflicting_rows",
        ),
        (
            "start,symbol,timeframe,open,high,low,close\n2024-01-02,AAPL,7m,1,1,1,1\n",
            2,
            "unknown_timeframe",
        ),
        ("timestamp,symbol,price\n2024-01-02T10:00:00Z,aapl,1\n", 2, "invalid_symbol"),
        ("timestamp,symbol,price\nyesterday,AAPL,1\n", 2, "invalid_timestamp"),
        ("when,what\n1,2\n", 1, "unknown_file_kind"),
    ],
)
def test_a_malformed_row_is_named_by_row_field_and_code(
    tmp_path: Path, text: str, row: int, code: str
) -> None:
    with pytest.raises(BarFileError) as caught:
        BarFile(_write(tmp_path, text))
    assert (caught.value.row, caught.value.rejection.code) == (row, code)
    assert not caught.value.retryable


def test_skip_invalid_counts_instead_of_stopping(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "date,symbol,open,high,low,close\n2024-01-02,AAPL,1,1,1,1\n2024-01-03,AAPL,0,1,1,1\n",
    )
    bars = BarFile(path, skip_invalid=True)
    assert (len(bars), bars.skipped) == (1, 1)


def test_price_files_build_bars_like_live_announcements_and_complete_until(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "timestamp,symbol,price\n2024-01-02T14:31:00Z,AAPL,10\n2024-01-02T14:30:00Z,AAPL,11\n"
        "2024-01-03T14:30:00Z,AAPL,12\n",
    )
    (day,) = BarFile(path)  # the 3rd's bar is still open at the file's end
    assert (day.open, day.close, day.high, day.low) == (11, 10, 11, 10)  # ticks sorted by time
    both = BarFile(path, complete_until=datetime(2024, 1, 4, tzinfo=UTC))
    assert [b.close for b in both] == [10, 12]


def test_the_replay_helpers_give_the_files_own_times_and_closes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "date,symbol,open,high,low,close\n2024-01-03,AAPL,1,2,1,2\n2024-01-02,AAPL,1,1,1,1\n",
    )
    bars = BarFile(path)
    assert bars.first_time == datetime(2024, 1, 2, tzinfo=UTC)
    assert bars.last_time == datetime(2024, 1, 4, tzinfo=UTC)
    assert list(bars.closes()) == [
        (datetime(2024, 1, 3, tzinfo=UTC), "AAPL", Decimal(1)),
        (datetime(2024, 1, 4, tzinfo=UTC), "AAPL", Decimal(2)),
    ]
