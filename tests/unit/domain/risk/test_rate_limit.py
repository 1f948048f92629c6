from strategy_worker.domain.risk.rate_limit import TokenBucket


def test_bucket_starts_full_and_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        bucket.take()
    assert bucket.tokens == 0.0
    bucket.refill(1.0)
    assert bucket.tokens == 2.0
    bucket.refill(100.0)
    assert bucket.tokens == 3.0


def test_forced_takes_borrow_but_never_below_minus_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    for _ in range(10):
        bucket.take()
    assert bucket.tokens == -2.0


def test_refill_ignores_time_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=5, now=10.0)
    bucket.take()
    bucket.refill(5.0)
    assert bucket.tokens == 4.0
