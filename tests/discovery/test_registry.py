"""The registry of verified records: replay rules, expiry, bound.  No sockets."""

from __future__ import annotations

from typing import Any

import pytest

from llamanet.discovery.registry import Registry
from llamanet.errors import StaleRecordError
from llamanet.protocol.records import SignedRecord, open_record, seal_record
from llamanet.trust.keys import Identity

from ..protocol.helpers import NOW, POLICY, make_record

ALICE = Identity(b"\x11" * 32)
BOB = Identity(b"\x12" * 32)
CAROL = Identity(b"\x13" * 32)
DAVE = Identity(b"\x14" * 32)


def signed(identity: Identity, *, now: float = NOW, **overrides: Any) -> SignedRecord:
    """A record that passed open_record at ``now``, as the registry's callers hold."""
    record = make_record(identity, now=now, **overrides)
    return open_record(seal_record(record, identity), now=now, policy=POLICY)


def test_offer_holds_a_new_record() -> None:
    registry = Registry()
    record = signed(ALICE)
    assert registry.offer(record, now=NOW, source="dht") is True
    assert len(registry) == 1
    assert ALICE.peer_id in registry
    assert BOB.peer_id not in registry
    assert registry.get(ALICE.peer_id, now=NOW) == record
    entry = registry.get_entry(ALICE.peer_id, now=NOW)
    assert entry is not None
    assert (entry.record, entry.received_at, entry.source) == (record, NOW, "dht")


def test_get_of_an_unknown_peer_is_none() -> None:
    assert Registry().get(ALICE.peer_id, now=NOW) is None


def test_find_matches_the_capability_and_what_is_under_it() -> None:
    registry = Registry()
    coder = signed(ALICE, caps=("code_generation.python",))
    echo = signed(BOB, caps=("text.echo",))
    registry.offer(coder, now=NOW, source="dht")
    registry.offer(echo, now=NOW, source="mdns")
    assert registry.find("code_generation", now=NOW) == [coder]
    assert registry.find("code_generation.python", now=NOW) == [coder]
    assert registry.find("text", now=NOW) == [echo]


@pytest.mark.parametrize(
    "query", ["code", "code_gen", "code_generation.rust", "code_generation.python.fast"]
)
def test_find_does_not_match_a_partial_segment_or_a_sibling(query: str) -> None:
    registry = Registry()
    registry.offer(signed(ALICE, caps=("code_generation.python",)), now=NOW, source="dht")
    assert registry.find(query, now=NOW) == []


def test_a_higher_seq_replaces_the_held_record() -> None:
    registry = Registry()
    registry.offer(signed(ALICE, seq=1), now=NOW, source="dht")
    newer = signed(ALICE, seq=2, caps=("math.eval",))
    assert registry.offer(newer, now=NOW + 1, source="direct") is True
    assert registry.get(ALICE.peer_id, now=NOW + 1) == newer
    entry = registry.get_entry(ALICE.peer_id, now=NOW + 1)
    assert entry is not None and entry.source == "direct"
    assert len(registry) == 1


def test_a_lower_seq_is_a_replay() -> None:
    registry = Registry()
    held = signed(ALICE, seq=5)
    registry.offer(held, now=NOW, source="dht")
    with pytest.raises(StaleRecordError, match="seq 4 is not above the held seq 5"):
        registry.offer(signed(ALICE, seq=4), now=NOW, source="dht")
    assert registry.get(ALICE.peer_id, now=NOW) == held


def test_an_equal_seq_with_a_different_envelope_is_refused() -> None:
    registry = Registry()
    held = signed(ALICE, seq=5, caps=("text.echo",))
    registry.offer(held, now=NOW, source="dht")
    conflicting = signed(ALICE, seq=5, caps=("math.eval",))
    assert conflicting.envelope != held.envelope
    with pytest.raises(StaleRecordError):
        registry.offer(conflicting, now=NOW, source="dht")
    assert registry.get(ALICE.peer_id, now=NOW) == held


def test_the_identical_envelope_again_is_not_news() -> None:
    registry = Registry()
    record = signed(ALICE, seq=5)
    registry.offer(record, now=NOW, source="dht")
    assert registry.offer(record, now=NOW + 10, source="mdns") is False
    entry = registry.get_entry(ALICE.peer_id, now=NOW + 10)
    # The first sighting is kept: not news means nothing changed.
    assert entry is not None and (entry.received_at, entry.source) == (NOW, "dht")


def test_check_says_what_offer_would_refuse_without_changing_anything() -> None:
    registry = Registry()
    held = signed(ALICE, seq=5, caps=("text.echo",))
    registry.offer(held, now=NOW, source="dht")
    with pytest.raises(StaleRecordError):
        registry.check(signed(ALICE, seq=4), now=NOW)
    with pytest.raises(StaleRecordError):
        registry.check(signed(ALICE, seq=5, caps=("math.eval",)), now=NOW)
    registry.check(held, now=NOW)
    registry.check(signed(ALICE, seq=6), now=NOW)
    registry.check(signed(BOB, seq=1), now=NOW)
    assert registry.get(ALICE.peer_id, now=NOW) == held
    assert BOB.peer_id not in registry


def test_check_ignores_an_expired_held_record() -> None:
    registry = Registry()
    registry.offer(signed(ALICE, seq=5, exp=int(NOW) + 60), now=NOW, source="dht")
    later = NOW + 61
    registry.check(signed(ALICE, now=later, seq=1), now=later)


def test_expired_records_are_hidden_then_dropped_by_expire() -> None:
    registry = Registry()
    short = signed(ALICE, exp=int(NOW) + 60)
    long = signed(BOB, exp=int(NOW) + 3600)
    registry.offer(short, now=NOW, source="dht")
    registry.offer(long, now=NOW, source="dht")
    assert registry.get(ALICE.peer_id, now=NOW + 59) == short

    at_expiry = NOW + 60
    assert registry.get(ALICE.peer_id, now=at_expiry) is None
    assert registry.get_entry(ALICE.peer_id, now=at_expiry) is None
    assert registry.find("text", now=at_expiry) == [long]
    assert [e.record for e in registry.entries(now=at_expiry)] == [long]
    assert len(registry) == 2  # hidden, not yet removed

    assert registry.expire(at_expiry) == [ALICE.peer_id]
    assert len(registry) == 1
    assert ALICE.peer_id not in registry
    assert registry.expire(at_expiry) == []


def test_an_expired_held_record_does_not_block_a_lower_seq() -> None:
    # A node that lost its state restarts with a lower seq once its old record expired.
    registry = Registry()
    registry.offer(signed(ALICE, seq=1000, exp=int(NOW) + 60), now=NOW, source="dht")
    later = NOW + 120
    restarted = signed(ALICE, now=later, seq=1)
    assert registry.offer(restarted, now=later, source="dht") is True
    assert registry.get(ALICE.peer_id, now=later) == restarted


def test_a_full_registry_evicts_the_record_expiring_soonest() -> None:
    registry = Registry(max_records=2)
    lasting = signed(ALICE, exp=int(NOW) + 3600)
    fading = signed(BOB, exp=int(NOW) + 600)
    registry.offer(lasting, now=NOW, source="dht")
    registry.offer(fading, now=NOW, source="dht")
    newcomer = signed(CAROL, exp=int(NOW) + 1200)
    assert registry.offer(newcomer, now=NOW, source="dht") is True
    assert len(registry) == 2
    assert BOB.peer_id not in registry
    assert registry.get(ALICE.peer_id, now=NOW) == lasting
    assert registry.get(CAROL.peer_id, now=NOW) == newcomer


def test_a_full_registry_drops_every_expired_record_before_evicting() -> None:
    registry = Registry(max_records=3)
    registry.offer(signed(ALICE, exp=int(NOW) + 60), now=NOW, source="dht")
    registry.offer(signed(BOB, exp=int(NOW) + 90), now=NOW, source="dht")
    live = signed(CAROL, exp=int(NOW) + 600)
    registry.offer(live, now=NOW, source="dht")
    later = NOW + 100
    newcomer = signed(DAVE, now=later)
    registry.offer(newcomer, now=later, source="dht")
    # Both expired records went, not just the one an eviction would pick.
    assert len(registry) == 2
    assert registry.get(CAROL.peer_id, now=later) == live
    assert registry.get(DAVE.peer_id, now=later) == newcomer


def test_updating_a_held_peer_when_full_evicts_nobody() -> None:
    registry = Registry(max_records=2)
    registry.offer(signed(ALICE, seq=1, exp=int(NOW) + 600), now=NOW, source="dht")
    registry.offer(signed(BOB, seq=1, exp=int(NOW) + 60), now=NOW, source="dht")
    registry.offer(signed(ALICE, seq=2), now=NOW, source="dht")
    assert len(registry) == 2
    assert BOB.peer_id in registry


def test_remove() -> None:
    registry = Registry()
    registry.offer(signed(ALICE), now=NOW, source="dht")
    assert registry.remove(ALICE.peer_id) is True
    assert registry.remove(ALICE.peer_id) is False
    assert len(registry) == 0


@pytest.mark.parametrize("size", [0, -1])
def test_max_records_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="max_records must be positive"):
        Registry(max_records=size)


def _addr(ip: str) -> bytes:
    import multiaddr

    return bytes(multiaddr.Multiaddr(f"/ip4/{ip}/tcp/4101").to_bytes())


def test_one_address_holds_a_bounded_number_of_identities() -> None:
    from llamanet.errors import CrowdedAddressError

    registry = Registry(max_per_address=3)
    crowd = [Identity(bytes([0x30 + i]) * 32) for i in range(5)]
    for identity in crowd[:3]:
        registry.offer(signed(identity, addrs=(_addr("203.0.113.7"),)), now=NOW, source="dht")
    with pytest.raises(CrowdedAddressError, match=r"203\.0\.113\.7 already has 3 identities"):
        registry.offer(signed(crowd[3], addrs=(_addr("203.0.113.7"),)), now=NOW, source="dht")
    # Another address, loopback, and a held peer's newer record are all fine.
    registry.offer(signed(crowd[3], addrs=(_addr("203.0.113.8"),)), now=NOW, source="dht")
    for identity in (ALICE, BOB, CAROL, DAVE):
        registry.offer(signed(identity, addrs=(_addr("127.0.0.1"),)), now=NOW, source="dht")
    newer = signed(crowd[0], now=NOW + 1, addrs=(_addr("203.0.113.7"),))
    assert registry.offer(newer, now=NOW + 1, source="dht")
    assert len(registry) == 8
