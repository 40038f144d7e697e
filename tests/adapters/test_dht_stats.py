"""Counting the DHT's operations: histograms, lookup depth, traces across tasks."""

from __future__ import annotations

import pytest
import trio

from llamanet.adapters.dht_stats import (
    DhtStats,
    Histogram,
    LookupTrace,
    current_trace,
    tracing,
)


def test_a_histogram_is_cumulative_and_ends_at_infinity() -> None:
    hist = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 7.0):
        hist.observe(value)
    assert hist.cumulative() == [(1.0, 2), (2.0, 3), (5.0, 3), (float("inf"), 4)]
    assert (hist.count, hist.total) == (4, 10.0)


def test_hops_follow_the_longest_chain_of_referrals() -> None:
    trace = LookupTrace()
    trace.queried(b"a", [b"b", b"c"])  # a came from our table: hop 1
    trace.queried(b"b", [b"d"])  # b was named by a: hop 2
    trace.queried(b"d", [b"a"])  # a keeps its first, shorter depth
    trace.queried(b"c", [])
    trace.queried(b"e", [])  # another peer from our own table
    assert (trace.queries, trace.hops) == (5, 3)


async def test_a_trace_reaches_the_tasks_a_lookup_starts_and_adds_up_outwards() -> None:
    assert current_trace() is None

    async def query(peer: bytes) -> None:
        trace = current_trace()
        assert trace is not None
        trace.queried(peer, [])

    with tracing() as trace:
        with tracing() as inner:
            async with trio.open_nursery() as nursery:
                for peer in (b"x", b"y"):
                    nursery.start_soon(query, peer)
        assert (inner.queries, inner.hops) == (2, 1)
        await query(b"z")
    assert (trace.queries, trace.hops) == (3, 1)
    assert current_trace() is None


def test_stats_count_outcomes_and_only_walks_have_hops() -> None:
    stats = DhtStats()
    walked = LookupTrace()
    walked.queried(b"a", [])
    stats.record("get_record", "ok", 0.2, walked)
    stats.record("get_record", "timeout", 15.0, LookupTrace(timed_out=True))
    assert stats.outcomes == {("get_record", "ok"): 1, ("get_record", "timeout"): 1}
    assert stats.seconds["get_record"].count == 2
    assert stats.hops["get_record"].count == 1
    assert stats.queries["get_record"] == 1
    with pytest.raises(ValueError, match="unknown DHT operation"):
        stats.record("get_value", "ok", 0.1, walked)
