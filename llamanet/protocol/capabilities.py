"""Capability names, their prefixes, and the DHT provider key for each.

A capability is a lowercase dotted name such as ``code_generation.python``.  A
node offering ``a.b.c`` is also findable under ``a.b`` and ``a``: a search for
``code_generation`` finds every code generator, a search for
``code_generation.python`` only the Python ones.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

from llamanet.errors import LocalProtocolError

MAX_CAPABILITY_LENGTH: Final = 128
MAX_CAPABILITIES: Final = 64
_CAPABILITY_RE: Final = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
_SWARM_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

# CIDv1, raw codec, sha2-256 multihash (docs/PROTOCOL.md, "Provider keys").
_CID_V1: Final = b"\x01"
_RAW_CODEC: Final = b"\x55"
_SHA2_256_MH: Final = b"\x12\x20"


def is_valid_capability(name: object) -> bool:
    """True when ``name`` is a well-formed capability name."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_CAPABILITY_LENGTH
        and _CAPABILITY_RE.fullmatch(name) is not None
    )


def validate_capability(name: str) -> str:
    """Return ``name`` unchanged, or raise :class:`LocalProtocolError` explaining why
    it is not a capability name."""
    if not is_valid_capability(name):
        raise LocalProtocolError(
            f"invalid capability name {name!r}: use lowercase dotted segments of "
            f"[a-z0-9_], at most {MAX_CAPABILITY_LENGTH} characters (e.g. 'math.eval')"
        )
    return name


def validate_swarm_name(name: str) -> str:
    """Swarm names partition provider keys: nodes of different swarms never find each
    other's capabilities through the DHT."""
    if not isinstance(name, str) or _SWARM_RE.fullmatch(name) is None:
        raise LocalProtocolError(
            f"invalid swarm name {name!r}: 1-64 characters of [a-z0-9_-], "
            "starting with a letter or digit"
        )
    return name


def capability_prefixes(name: str) -> list[str]:
    """``"a.b.c"`` -> ``["a.b.c", "a.b", "a"]`` (most specific first)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def capability_matches(query: str, offered: str) -> bool:
    """True when a node offering ``offered`` serves a request for ``query``: either the
    same name, or ``offered`` is a more specific capability under ``query``."""
    return offered == query or offered.startswith(query + ".")


def best_match(query: str, offered: list[str] | tuple[str, ...]) -> str | None:
    """The offered capability a request for ``query`` should run as: the exact name if
    offered, otherwise the least specific name under it (ties broken by name)."""
    if query in offered:
        return query
    under = sorted(
        (c for c in offered if capability_matches(query, c)), key=lambda c: (c.count("."), c)
    )
    return under[0] if under else None


def provider_key(swarm: str, capability: str) -> bytes:
    """The CIDv1 (raw, sha2-256) of ``llamanet/cap/v1/<swarm>/<capability>``, as bytes."""
    digest = hashlib.sha256(f"llamanet/cap/v1/{swarm}/{capability}".encode()).digest()
    return _CID_V1 + _RAW_CODEC + _SHA2_256_MH + digest


def provider_key_string(swarm: str, capability: str) -> str:
    """The same CID in its canonical text form (multibase base32, lowercase, ``b`` prefix)."""
    raw = provider_key(swarm, capability)
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")
