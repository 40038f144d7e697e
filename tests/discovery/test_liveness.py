"""The liveness table: who to ping when, and when a silent peer is gone.  Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamanet.discovery.liveness import (
    DEFAULT_INTERVAL,
    DEFAULT_MAX_FAILURES,
    DEFAULT_SUSPECT_INTERVAL,
    DEFAULT_TIMEOUT,
    LivenessConfig,
    LivenessTable,
)

P = b"peer-p"
Q = b"peer-q"
T0 = 1000.0
CONFIG = LivenessConfig(interval=5.0, timeout=2.0, suspect_interval=1.0, max_failures=3)


def watched(*peers: bytes, config: LivenessConfig = CONFIG, now: float = T0) -> LivenessTable:
    table = LivenessTable(config)
    for peer in peers:
        table.watch(peer, now)
    return table


# --- LivenessConfig ------------------------------------------------------------


def test_defaults() -> None:
    config = LivenessConfig()
    assert (config.interval, config.timeout, config.suspect_interval, config.max_failures) == (
        DEFAULT_INTERVAL,
        DEFAULT_TIMEOUT,
        DEFAULT_SUSPECT_INTERVAL,
        DEFAULT_MAX_FAILURES,
    )
    assert LivenessTable().config == config


def test_default_worst_detection_time_is_13_seconds() -> None:
    assert LivenessConfig().worst_detection_time == 5 + 3 * 2 + 2 * 1 == 13


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (LivenessConfig(interval=10, timeout=1, suspect_interval=0.5, max_failures=1), 11.0),
        (LivenessConfig(interval=1, timeout=3, suspect_interval=2, max_failures=4), 1 + 12 + 6),
        (LivenessConfig(max_failures=2), 5 + 2 * 2 + 1),
    ],
)
def test_worst_detection_time_arithmetic(config: LivenessConfig, expected: float) -> None:
    assert config.worst_detection_time == pytest.approx(expected)


@pytest.mark.parametrize("field_name", ["interval", "timeout", "suspect_interval"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_config_refuses_non_positive_durations(field_name: str, value: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        LivenessConfig(**{field_name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("max_failures", [0, -1])
def test_config_refuses_max_failures_below_one(max_failures: int) -> None:
    with pytest.raises(ValueError, match="max_failures"):
        LivenessConfig(max_failures=max_failures)


def test_config_accepts_tiny_positive_values() -> None:
    config = LivenessConfig(interval=1e-3, timeout=1e-3, suspect_interval=1e-3, max_failures=1)
    assert config.worst_detection_time == pytest.approx(2e-3)


def test_config_is_frozen_and_keyword_only() -> None:
    with pytest.raises(AttributeError):
        CONFIG.interval = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        LivenessConfig(5.0)  # type: ignore[call-arg]


# --- watch / due ---------------------------------------------------------------


def test_a_new_table_is_empty() -> None:
    table = LivenessTable(CONFIG)
    assert len(table) == 0
    assert table.next_due_at() is None
    assert table.due(T0) == []
    assert P not in table


def test_watch_is_not_due_before_the_interval_and_due_at_it() -> None:
    table = watched(P)
    assert P in table
    assert len(table) == 1
    assert not table.is_suspect(P)
    assert table.next_due_at() == T0 + 5
    assert table.due(T0) == []
    assert table.due(T0 + 4.999) == []
    assert table.due(T0 + 5) == [P]


def test_due_late_still_returns_the_peer() -> None:
    table = watched(P)
    assert table.due(T0 + 100) == [P]


def test_due_marks_peers_not_due_until_reported() -> None:
    table = watched(P, Q)
    assert sorted(table.due(T0 + 5)) == [P, Q]
    assert table.due(T0 + 5) == []
    assert table.due(T0 + 1e9) == []
    assert table.next_due_at() == math.inf
    assert len(table) == 2  # still watched while the ping is in flight


def test_due_returns_only_those_whose_time_has_come() -> None:
    table = LivenessTable(CONFIG)
    table.watch(P, T0)
    table.watch(Q, T0 + 3)
    assert table.next_due_at() == T0 + 5
    assert table.due(T0 + 5) == [P]
    assert table.next_due_at() == T0 + 8
    assert table.due(T0 + 8) == [Q]


def test_watch_again_restarts_the_schedule_and_clears_suspicion() -> None:
    table = watched(P)
    table.due(T0 + 5)
    table.ping_failed(P, T0 + 7)
    assert table.is_suspect(P)
    table.watch(P, T0 + 7.5)
    assert not table.is_suspect(P)
    assert table.next_due_at() == T0 + 12.5


# --- ping results --------------------------------------------------------------


def test_ping_succeeded_reschedules_at_now_plus_interval() -> None:
    table = watched(P)
    assert table.due(T0 + 5) == [P]
    table.ping_succeeded(P, T0 + 5.3)
    assert table.next_due_at() == pytest.approx(T0 + 10.3)
    assert table.due(T0 + 10.2) == []
    assert table.due(T0 + 10.3) == [P]


def test_ping_failed_makes_the_peer_suspect_and_due_after_suspect_interval() -> None:
    table = watched(P)
    table.due(T0 + 5)
    assert table.ping_failed(P, T0 + 7) is False
    assert table.is_suspect(P)
    assert P in table
    assert table.next_due_at() == T0 + 8
    assert table.due(T0 + 7.9) == []
    assert table.due(T0 + 8) == [P]


def test_ping_succeeded_clears_suspicion() -> None:
    table = watched(P)
    table.due(T0 + 5)
    table.ping_failed(P, T0 + 7)
    table.due(T0 + 8)
    table.ping_succeeded(P, T0 + 8.1)
    assert not table.is_suspect(P)
    assert table.next_due_at() == pytest.approx(T0 + 13.1)


def test_max_failures_in_a_row_and_the_peer_is_gone() -> None:
    table = watched(P, Q)
    now = T0 + 5
    results = []
    for _ in range(CONFIG.max_failures):
        assert P in table.due(now)
        now += CONFIG.timeout
        results.append(table.ping_failed(P, now))
        now += CONFIG.suspect_interval
    assert results == [False, False, True]
    assert P not in table
    assert not table.is_suspect(P)
    assert Q in table  # the other peer is untouched
    assert len(table) == 1
    assert P not in table.due(now + 100)


def test_max_failures_one_is_gone_on_the_first_failure() -> None:
    table = watched(P, config=LivenessConfig(max_failures=1))
    table.due(T0 + 5)
    assert table.ping_failed(P, T0 + 7) is True
    assert P not in table


def test_a_success_in_between_resets_the_failure_count() -> None:
    table = watched(P)
    table.due(T0 + 5)
    assert table.ping_failed(P, T0 + 7) is False
    table.due(T0 + 8)
    assert table.ping_failed(P, T0 + 10) is False
    table.due(T0 + 11)
    table.ping_succeeded(P, T0 + 11)
    # two more failures are not enough: the count started again
    table.due(T0 + 16)
    assert table.ping_failed(P, T0 + 18) is False
    table.due(T0 + 19)
    assert table.ping_failed(P, T0 + 21) is False
    assert P in table
    table.due(T0 + 22)
    assert table.ping_failed(P, T0 + 24) is True
    assert P not in table


def test_unwatch() -> None:
    table = watched(P, Q)
    table.unwatch(P)
    assert P not in table
    assert len(table) == 1
    assert table.due(T0 + 5) == [Q]
    table.unwatch(P)  # unwatching twice is harmless
    table.unwatch(b"never-seen")
    assert len(table) == 1


def test_unwatch_while_a_ping_is_in_flight_drops_its_result() -> None:
    table = watched(P)
    table.due(T0 + 5)
    table.unwatch(P)
    table.ping_succeeded(P, T0 + 6)
    assert table.ping_failed(P, T0 + 7) is False
    assert P not in table


def test_next_due_at_is_the_earliest() -> None:
    table = LivenessTable(CONFIG)
    table.watch(P, T0 + 2)
    table.watch(Q, T0)
    assert table.next_due_at() == T0 + 5
    table.due(T0 + 5)
    assert table.next_due_at() == T0 + 7
    table.unwatch(P)
    assert table.next_due_at() == math.inf
    table.unwatch(Q)
    assert table.next_due_at() is None


def test_unknown_peers_are_ignored_by_ping_results() -> None:
    table = watched(P)
    table.ping_succeeded(Q, T0 + 1)
    assert table.ping_failed(Q, T0 + 1) is False
    assert Q not in table
    assert not table.is_suspect(Q)
    assert len(table) == 1
    assert table.next_due_at() == T0 + 5


# --- detection bound -----------------------------------------------------------


@dataclass
class Sim:
    """Drive one table the way the adapter does: wake at ``next_due_at()``, ping what
    is due; an answered ping reports success after ``rtt``, an unanswered one reports
    failure ``timeout`` after it was sent."""

    table: LivenessTable
    dies_at: dict[bytes, float]
    rtt: float = 0.0
    now: float = 0.0
    pending: list[tuple[float, bytes, bool]] = field(default_factory=list)
    last_answer_at: dict[bytes, float] = field(default_factory=dict)
    gone_at: dict[bytes, float] = field(default_factory=dict)

    def run(self, until: float) -> None:
        while True:
            due_at = self.table.next_due_at()
            candidates = [t for t, _, _ in self.pending]
            if due_at is not None and due_at != math.inf:
                candidates.append(due_at)
            if not candidates:
                return
            self.now = min(candidates)
            if self.now > until:
                return
            for at, peer, ok in [p for p in self.pending if p[0] <= self.now]:
                self.pending.remove((at, peer, ok))
                if ok:
                    self.table.ping_succeeded(peer, at)
                    self.last_answer_at[peer] = at
                elif self.table.ping_failed(peer, at):
                    self.gone_at[peer] = at
            for peer in self.table.due(self.now):
                if self.now < self.dies_at[peer]:
                    self.pending.append((self.now + self.rtt, peer, True))
                else:
                    self.pending.append((self.now + self.table.config.timeout, peer, False))


durations = st.floats(min_value=0.1, max_value=30.0, allow_nan=False, allow_infinity=False)
configs = st.builds(
    LivenessConfig,
    interval=durations,
    timeout=durations,
    suspect_interval=durations,
    max_failures=st.integers(min_value=1, max_value=6),
)


def test_the_worst_case_is_reached_exactly() -> None:
    # seen alive at T0 and silent from then on: 5 s to the first ping, then three
    # 2 s timeouts separated by two 1 s retries
    sim = Sim(LivenessTable(CONFIG), dies_at={P: T0})
    sim.table.watch(P, T0)
    sim.run(until=T0 + 100)
    assert sim.gone_at == {P: T0 + CONFIG.worst_detection_time}
    assert len(sim.table) == 0


def test_a_peer_that_keeps_answering_is_never_gone() -> None:
    sim = Sim(LivenessTable(CONFIG), dies_at={P: math.inf}, rtt=1.9)
    sim.table.watch(P, T0)
    sim.run(until=T0 + 1000)
    assert sim.gone_at == {}
    assert P in sim.table
    assert sim.last_answer_at[P] > T0 + 990


def _close_enough(value: float, bound: float) -> bool:
    return value <= bound + 1e-9 * max(1.0, abs(bound))


@given(
    config=configs,
    watched_at=st.floats(min_value=0.0, max_value=1e4),
    dies_after=st.floats(min_value=0.0, max_value=60.0),
)
def test_a_silent_peer_is_gone_within_worst_detection_time(
    config: LivenessConfig, watched_at: float, dies_after: float
) -> None:
    dies_at = watched_at + dies_after
    sim = Sim(LivenessTable(config), dies_at={P: dies_at})
    sim.table.watch(P, watched_at)
    sim.run(until=dies_at + config.worst_detection_time + 1.0)
    assert P in sim.gone_at
    assert P not in sim.table
    assert sim.gone_at[P] >= dies_at
    assert _close_enough(sim.gone_at[P], dies_at + config.worst_detection_time)


@given(
    config=configs,
    rtt_fraction=st.floats(min_value=0.0, max_value=0.99),
    deaths=st.lists(
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=40.0)), min_size=1, max_size=4
    ),
)
def test_several_peers_only_the_silent_ones_go_and_in_time(
    config: LivenessConfig, rtt_fraction: float, deaths: list[float | None]
) -> None:
    peers = [b"peer-%d" % i for i in range(len(deaths))]
    dies_at = {p: math.inf if d is None else d for p, d in zip(peers, deaths, strict=True)}
    sim = Sim(LivenessTable(config), dies_at=dies_at, rtt=rtt_fraction * config.timeout)
    for i, peer in enumerate(peers):
        sim.table.watch(peer, float(i))
        sim.last_answer_at[peer] = float(i)
    # a ping sent just before a peer falls silent is still answered, rtt later
    horizon = 40.0 + len(peers) + config.timeout + config.worst_detection_time + 1.0
    sim.run(until=horizon)
    for peer in peers:
        if dies_at[peer] == math.inf:
            assert peer not in sim.gone_at
            assert peer in sim.table
        else:
            assert peer in sim.gone_at
            # measured from the last answered ping, as the docstring promises
            bound = sim.last_answer_at[peer] + config.worst_detection_time
            assert _close_enough(sim.gone_at[peer], bound)
            assert sim.gone_at[peer] >= dies_at[peer]
