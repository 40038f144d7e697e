"""The local registry of verified capability records.

Only records that passed :func:`~llamanet.protocol.records.open_record` get here,
whatever path brought them (DHT, direct fetch, mDNS).  The registry enforces the
rules that need memory of earlier records: a lower (or equal, but different)
``seq`` than the one held is a replay and is refused; records leave when they
expire; the table is bounded so a flood of identities cannot grow it forever.
It is a plain data structure: callers pass ``now``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import multiaddr
import multiaddr.exceptions

from llamanet.errors import CrowdedAddressError, StaleRecordError
from llamanet.protocol.capabilities import capability_matches
from llamanet.protocol.records import SignedRecord, check_newer

DEFAULT_MAX_RECORDS: Final = 10_000
DEFAULT_MAX_PER_ADDRESS: Final = 16
"""Identities one IP address may have in the registry; loopback is exempt (a
machine running a test swarm of its own)."""


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    record: SignedRecord
    received_at: float
    source: str
    """Where it came from: ``dht``, ``direct``, ``mdns``, ``self``."""


def public_addresses(addrs: Iterable[bytes]) -> frozenset[str]:
    """The IP addresses a record lists, loopback and unspecified ones left out."""
    return _public_addresses(tuple(addrs))


@functools.lru_cache(maxsize=2 * DEFAULT_MAX_RECORDS)
def _public_addresses(addrs: tuple[bytes, ...]) -> frozenset[str]:
    found = (address_ip(raw) for raw in addrs)
    return frozenset(
        str(ip) for ip in found if ip is not None and not (ip.is_loopback or ip.is_unspecified)
    )


def address_ip(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in a binary multiaddr, if it has one."""
    try:
        addr = multiaddr.Multiaddr(raw)
    except (ValueError, TypeError, multiaddr.exceptions.Error):
        return None  # a peer's unparsable address names no IP: nothing to count
    for protocol in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(addr.value_for_protocol(protocol))
        except (ValueError, multiaddr.exceptions.Error):
            continue  # no such component (or a bad one): try the other family
    return None


class Registry:
    def __init__(
        self,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_per_address: int = DEFAULT_MAX_PER_ADDRESS,
    ) -> None:
        if max_records <= 0:
            raise ValueError("max_records must be positive")
        if max_per_address <= 0:
            raise ValueError("max_per_address must be positive")
        self.max_records = max_records
        self.max_per_address = max_per_address
        self._entries: dict[bytes, RegistryEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer: object) -> bool:
        return peer in self._entries

    def offer(self, record: SignedRecord, *, now: float, source: str) -> bool:
        """Hold ``record`` if it is news.  Returns ``True`` when it replaced or added
        an entry, ``False`` for a copy of the record already held; raises
        :class:`StaleRecordError` for an older or conflicting one."""
        held = self._entries.get(record.peer)
        if held is not None and held.record.record.exp <= now:
            held = None
        if held is not None and held.record.envelope == record.envelope:
            return False
        check_newer(record, held.record if held else None)
        if record.peer not in self._entries:
            self._check_address_share(record, now)
        if (
            held is None
            and record.peer not in self._entries
            and len(self._entries) >= self.max_records
        ):
            self.expire(now)
            if len(self._entries) >= self.max_records:
                victim = min(self._entries.values(), key=lambda e: e.record.record.exp)
                del self._entries[victim.record.peer]
        self._entries[record.peer] = RegistryEntry(record, now, source)
        return True

    def _check_address_share(self, record: SignedRecord, now: float) -> None:
        for address in public_addresses(record.record.addrs):
            sharing = sum(
                1
                for entry in self._entries.values()
                if entry.record.record.exp > now
                and address in public_addresses(entry.record.record.addrs)
            )
            if sharing >= self.max_per_address:
                raise CrowdedAddressError(
                    f"{address} already has {sharing} identities here "
                    f"(at most {self.max_per_address})"
                )

    def check(self, record: SignedRecord, *, now: float) -> None:
        """Raise :class:`StaleRecordError` if :meth:`offer` would refuse ``record``."""
        entry = self.get_entry(record.peer, now=now)
        if entry is not None and entry.record.envelope != record.envelope:
            check_newer(record, entry.record)

    def get_entry(self, peer: bytes, *, now: float) -> RegistryEntry | None:
        entry = self._entries.get(peer)
        if entry is None or entry.record.record.exp <= now:
            return None
        return entry

    def get(self, peer: bytes, *, now: float) -> SignedRecord | None:
        entry = self.get_entry(peer, now=now)
        return entry.record if entry else None

    def find(self, capability: str, *, now: float) -> list[SignedRecord]:
        """Unexpired records offering ``capability`` or something more specific."""
        return [
            e.record
            for e in self._entries.values()
            if e.record.record.exp > now
            and any(capability_matches(capability, c) for c in e.record.record.caps)
        ]

    def entries(self, *, now: float) -> list[RegistryEntry]:
        return [e for e in self._entries.values() if e.record.record.exp > now]

    def remove(self, peer: bytes) -> bool:
        return self._entries.pop(peer, None) is not None

    def expire(self, now: float) -> list[bytes]:
        """Drop expired records; returns their peers."""
        gone = [p for p, e in self._entries.items() if e.record.record.exp <= now]
        for peer in gone:
            del self._entries[peer]
        return gone


__all__ = ["Registry", "RegistryEntry", "StaleRecordError"]
