"""Verified execution: the same task on k distinct peers, the quorum answer wins.

Answers are compared by a key: ``exact`` (the msgpack-able value itself, for
deterministic skills), or ``text`` (for LLM tasks at temperature 0 on the same
model digest: case, whitespace and surrounding punctuation do not count, and
answers from different model digests never agree).  A judge capability can be
named instead; the node asks it whether two answers agree.  The pure parts are
here; :meth:`Node.ask` with ``verify=k`` runs them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from llamanet.discovery.registry import address_ip

MODES: Final = ("exact", "text")
_SPACE = re.compile(r"\s+")


def normalized_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return _SPACE.sub(" ", text).strip().strip(string.punctuation + " ").casefold()


def answer_key(output: Any, mode: str, model_digest: str = "") -> str:
    """What two answers must share to agree."""
    if mode == "text":
        return f"{model_digest}\n{normalized_text(output)}"
    return json.dumps(output, sort_keys=True, default=repr)


@dataclass(frozen=True, slots=True)
class Vote:
    peer: str
    key: str


def quorum(votes: Sequence[Vote]) -> tuple[str, list[str], list[str]] | None:
    """The winning key with the peers for and against it, if more than half of
    the votes share one key."""
    if not votes:
        return None
    key, count = Counter(v.key for v in votes).most_common(1)[0]
    if count * 2 <= len(votes):
        return None
    agree = [v.peer for v in votes if v.key == key]
    return key, agree, [v.peer for v in votes if v.key != key]


def network_of(addrs: Iterable[bytes]) -> str:
    """A peer's network for diversity: the /24 (IPv4) or /48 (IPv6) of its first
    routable address, else of its first address at all."""
    networks: list[str] = []
    for raw in addrs:
        ip = address_ip(raw)
        if ip is None:
            continue
        prefix = 24 if ip.version == 4 else 48
        network = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
        if ip.is_global:
            return network
        networks.append(network)
    return networks[0] if networks else "?"


def diverse(peers: Sequence[bytes], network: dict[bytes, str], k: int) -> list[bytes]:
    """Up to ``k`` of ``peers`` (best first), preferring a different network for
    each before taking a second from the same one."""
    chosen: list[bytes] = []
    seen: set[str] = set()
    for peer in peers:
        if len(chosen) == k:
            break
        if network.get(peer, "?") not in seen:
            chosen.append(peer)
            seen.add(network.get(peer, "?"))
    for peer in peers:
        if len(chosen) == k:
            break
        if peer not in chosen:
            chosen.append(peer)
    return chosen
