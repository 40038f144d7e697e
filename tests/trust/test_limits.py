"""TokenBucket: a pure rate limiter; every call passes ``now``."""

from __future__ import annotations

import pytest

from llamanet.trust.limits import PeerBuckets, TokenBucket


def test_a_new_bucket_is_full() -> None:
    assert TokenBucket(capacity=3, rate=1).tokens == 3


def test_a_burst_up_to_capacity_then_refusal() -> None:
    bucket = TokenBucket(capacity=3, rate=1)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]


def test_a_refused_take_leaves_the_tokens() -> None:
    bucket = TokenBucket(capacity=3, rate=1)
    assert not bucket.try_take(0.0, amount=4)
    assert bucket.tokens == 3
    assert bucket.try_take(0.0, amount=3)


def test_tokens_refill_at_rate() -> None:
    bucket = TokenBucket(capacity=10, rate=2)
    assert bucket.try_take(0.0, amount=10)
    assert not bucket.try_take(0.4)  # 0.8 tokens so far
    assert bucket.try_take(0.5)  # 1.0
    assert not bucket.try_take(0.5)
    assert bucket.try_take(2.0, amount=3)  # 3.0 more after 1.5 s
    assert bucket.tokens == pytest.approx(0.0)


def test_refill_stops_at_capacity() -> None:
    bucket = TokenBucket(capacity=2, rate=5)
    assert bucket.try_take(0.0, amount=2)
    assert [bucket.try_take(100.0) for _ in range(3)] == [True, True, False]


def test_wait_time_says_when_tokens_will_be_there() -> None:
    bucket = TokenBucket(capacity=4, rate=2)
    assert bucket.wait_time(0.0) == 0.0
    assert bucket.try_take(0.0, amount=4)
    assert bucket.wait_time(0.0) == pytest.approx(0.5)
    assert bucket.wait_time(0.0, amount=3) == pytest.approx(1.5)
    assert bucket.wait_time(0.25) == pytest.approx(0.25)
    assert bucket.wait_time(0.5) == 0.0
    # Asking does not take anything.
    assert bucket.try_take(0.5)


def test_wait_time_beyond_capacity_is_the_time_to_refill_that_much() -> None:
    bucket = TokenBucket(capacity=2, rate=1)
    # More than the bucket can ever hold: never satisfiable, but the answer is finite.
    assert bucket.wait_time(0.0, amount=5) == pytest.approx(3.0)


def test_time_going_backwards_adds_no_tokens() -> None:
    bucket = TokenBucket(capacity=4, rate=1, updated_at=100.0)
    assert bucket.try_take(100.0, amount=4)
    assert not bucket.try_take(50.0)
    assert bucket.wait_time(50.0) == pytest.approx(1.0)
    # The clock coming back to where it was does not count the gap twice either.
    assert not bucket.try_take(100.0)
    assert bucket.updated_at == 100.0
    assert bucket.try_take(101.0)


def test_an_explicit_starting_level() -> None:
    bucket = TokenBucket(capacity=5, rate=1, tokens=0.0)
    assert not bucket.try_take(0.0)
    assert bucket.wait_time(0.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1), (-1, 1), (1, 0), (1, -0.5)])
def test_capacity_and_rate_must_be_positive(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError, match="capacity and rate must be positive"):
        TokenBucket(capacity=capacity, rate=rate)


def test_peer_buckets_are_per_peer() -> None:
    buckets = PeerBuckets(rate=1, burst=2)
    assert [buckets.try_take(b"a", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert buckets.try_take(b"b", 0.0) == 0.0  # b is not held to a's rate
    assert buckets.try_take(b"a", 1.0) == 0.0  # a's refill


def test_peer_buckets_forget_the_least_recently_seen() -> None:
    buckets = PeerBuckets(rate=1, burst=1, max_peers=2)
    for peer in (b"a", b"b", b"c"):
        buckets.try_take(peer, 0.0)
    assert len(buckets) == 2
    assert buckets.try_take(b"a", 0.0) == 0.0  # forgotten: a full bucket again
    assert buckets.try_take(b"c", 0.0) > 0  # remembered: still empty


def test_peer_buckets_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        PeerBuckets(rate=0, burst=1)
    with pytest.raises(ValueError, match="max_peers"):
        PeerBuckets(rate=1, burst=1, max_peers=0)
