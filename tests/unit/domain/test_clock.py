from datetime import UTC, datetime, timedelta, timezone

import pytest

from strategy_worker.domain.clock import Clock, ManualClock, epoch_seconds


def test_manual_clock_when_advanced_then_moves_by_exactly_that_much() -> None:
    clock = ManualClock(datetime(2024, 1, 2, tzinfo=UTC))
    clock.advance(1.5)
    clock.advance(timedelta(minutes=1))
    assert clock.now() == datetime(2024, 1, 2, 0, 1, 1, 500000, tzinfo=UTC)


def test_manual_clock_when_started_in_other_zone_then_reports_utc() -> None:
    clock = ManualClock(datetime(2024, 1, 2, 9, tzinfo=timezone(timedelta(hours=9))))
    assert clock.now() == datetime(2024, 1, 2, 0, tzinfo=UTC)
    assert clock.now().tzinfo == UTC


def test_manual_clock_never_moves_backwards_or_accepts_naive_times() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(clock.now() - timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware"):
        ManualClock(datetime(2024, 1, 1))  # noqa: DTZ001 - the point of the test


def test_manual_clock_satisfies_the_clock_protocol() -> None:
    clock: Clock = ManualClock()
    assert clock.now().tzinfo is not None


def test_epoch_seconds_uses_the_clocks_timestamp_or_falls_back_to_now() -> None:
    manual = ManualClock(datetime(2024, 1, 2, tzinfo=UTC))
    read = epoch_seconds(manual)
    manual.advance(2.5)
    assert read() == manual.now().timestamp() == datetime(2024, 1, 2, tzinfo=UTC).timestamp() + 2.5

    class NowOnly:
        def now(self) -> datetime:
            return datetime(2024, 1, 2, tzinfo=UTC)

    assert epoch_seconds(NowOnly())() == datetime(2024, 1, 2, tzinfo=UTC).timestamp()
