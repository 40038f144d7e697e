"""What llamanet puts in, and reads from, mDNS answers (no sockets, no zeroconf).

Following the libp2p mDNS spec (``specs/discovery/mdns.md``): a query asks for
``<service> PTR``; each peer answers ``<service> PTR <peer-name>.<service>`` with a
``<peer-name>.<service> TXT`` record holding one ``dnsaddr=<multiaddr>/p2p/<id>``
string per address (repeated ``dnsaddr=`` keys, never ``dnsaddr2=``).  A peer is
fully resolved from the PTR and TXT records alone: SRV and A/AAAA records, which
DNS-SD tools want, may be present but are never needed.

Service names: :data:`DEFAULT_SERVICE` (``_llamanet._udp.local.``) keeps unrelated
libp2p nodes on the LAN (IPFS desktops, other apps) out of our swarm and spares
them our queries; :data:`SPEC_SERVICE` (``_p2p._udp.local.``) is the spec's name,
which makes generic libp2p tools (js-libp2p's ``@libp2p/mdns``, go-libp2p) see us
and us them.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import multiaddr

from llamanet.errors import DecodeError
from llamanet.protocol.peer_ids import peer_id_from_text

DEFAULT_SERVICE: Final = "_llamanet._udp.local."
SPEC_SERVICE: Final = "_p2p._udp.local."
DNSADDR_PREFIX: Final = b"dnsaddr="
MAX_TXT_STRING: Final = 255
"""RFC 6763 section 6.1: each TXT string is at most 255 bytes."""
PEER_NAME_LENGTH: Final = 32
_PEER_NAME_ALPHABET: Final = string.ascii_lowercase + string.digits
_LABEL_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class MdnsPeer:
    """A peer as an mDNS answer describes it."""

    peer_id: bytes
    addrs: tuple[str, ...]
    """Dialable multiaddrs without their ``/p2p/`` part."""
    instance: str
    """The full PTR target, ``<peer-name>.<service>``."""


def normalize_service(name: str) -> str:
    """``_llamanet._udp.local`` -> ``_llamanet._udp.local.`` (DNS names end in a dot)."""
    name = name.strip().lower()
    if not name.endswith("."):
        name += "."
    parts = name[:-1].split(".")
    if len(parts) != 3 or parts[1] not in ("_udp", "_tcp") or parts[2] != "local":
        raise ValueError(f"not an mDNS service name like _llamanet._udp.local: {name!r}")
    label = parts[0]
    if not (label.startswith("_") and 2 <= len(label) <= 16 and _LABEL_RE.fullmatch(label[1:])):
        raise ValueError(f"service label must be '_' plus 1-15 of [a-z0-9-]: {label!r}")
    return name


def new_peer_name() -> str:
    """A random peer-name (the spec's PTR instance label), new for each run."""
    return "".join(secrets.choice(_PEER_NAME_ALPHABET) for _ in range(PEER_NAME_LENGTH))


def txt_strings(addrs: Iterable[str]) -> list[bytes]:
    """``dnsaddr=<addr>`` strings for full multiaddrs (ending in ``/p2p/<id>``);
    addresses too long for one TXT string are left out."""
    out: list[bytes] = []
    for addr in addrs:
        entry = DNSADDR_PREFIX + addr.encode()
        if "/p2p/" in addr and len(entry) <= MAX_TXT_STRING:
            out.append(entry)
    return out


def encode_txt_rdata(strings: Sequence[bytes]) -> bytes:
    """TXT rdata: each string behind its one-byte length."""
    out = bytearray()
    for item in strings:
        if len(item) > MAX_TXT_STRING:
            raise ValueError("TXT strings are at most 255 bytes")
        out.append(len(item))
        out += item
    return bytes(out)


def decode_txt_rdata(rdata: bytes) -> list[bytes]:
    """The strings of TXT rdata; :class:`DecodeError` if a length runs past the end."""
    strings: list[bytes] = []
    pos = 0
    while pos < len(rdata):
        length = rdata[pos]
        end = pos + 1 + length
        if end > len(rdata):
            raise DecodeError("TXT string runs past the end of the record")
        strings.append(rdata[pos + 1 : end])
        pos = end
    return strings


def peer_from_answer(
    instance: str, service: str, strings: Iterable[bytes], *, self_peer: bytes | None = None
) -> MdnsPeer | None:
    """The peer a PTR target and its TXT strings describe, or ``None`` if they do not
    describe a usable one (wrong service, no valid ``dnsaddr``, ourselves).

    Every ``dnsaddr`` must name the same peer; those that do not parse, lack a
    TCP transport or name another peer are ignored.
    """
    if not instance.lower().endswith("." + service.lower()):
        return None
    peer: bytes | None = None
    addrs: list[str] = []
    for entry in strings:
        if not entry.startswith(DNSADDR_PREFIX):
            continue
        parsed = _parse_dnsaddr(entry[len(DNSADDR_PREFIX) :])
        if parsed is None:
            continue
        addr_peer, addr = parsed
        if peer is None:
            peer = addr_peer
        if addr_peer == peer and addr not in addrs:
            addrs.append(addr)
    if peer is None or peer == self_peer or not addrs:
        return None
    return MdnsPeer(peer_id=peer, addrs=tuple(addrs), instance=instance)


def _parse_dnsaddr(raw: bytes) -> tuple[bytes, str] | None:
    try:
        text = raw.decode("ascii")
        ma = multiaddr.Multiaddr(text)
        protocols = [p.name for p in ma.protocols()]
        # A relayed address names the relay first; we dial TCP directly, so those
        # are skipped rather than credited to the relay.
        if "tcp" not in protocols or "p2p" not in protocols or "p2p-circuit" in protocols:
            return None
        peer = peer_id_from_text(text.rsplit("/p2p/", 1)[1])
    except (UnicodeDecodeError, DecodeError):
        return None
    except Exception:  # multiaddr raises assorted types for malformed text
        return None
    return peer, text.rsplit("/p2p/", 1)[0]
