"""Bootstrap peers: ``bootstrap_peers.toml`` and ``--bootstrap`` addresses.

File format (documented in the shipped file and README)::

    [[peers]]
    addr = "/ip4/192.0.2.10/tcp/4101/p2p/12D3KooW..."   # required, with /p2p/<peer id>
    name = "lab server"                                   # optional label

Every problem is reported with the file and line it is on.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import multiaddr

from llamanet.errors import ConfigError, DecodeError
from llamanet.protocol.peer_ids import peer_id_from_text


@dataclass(frozen=True, slots=True)
class BootstrapPeer:
    addr: str
    """Full multiaddr including ``/p2p/<peer id>``."""
    peer_id: bytes
    name: str = ""

    @property
    def transport_addr(self) -> str:
        """The address without its ``/p2p/`` part."""
        return self.addr.rsplit("/p2p/", 1)[0]


def parse_peer_addr(text: str, *, where: str) -> BootstrapPeer:
    """Check one multiaddr; ``where`` says where it came from for error messages."""
    try:
        ma = multiaddr.Multiaddr(text)
    except Exception as exc:  # multiaddr raises several unrelated types for bad input
        raise ConfigError(f"{where}: {text!r} is not a multiaddr ({exc})") from exc
    protocols = [p.name for p in ma.protocols()]
    if "p2p" not in protocols:
        raise ConfigError(f"{where}: {text!r} lacks the /p2p/<peer id> part")
    if "tcp" not in protocols or not ({"ip4", "ip6", "dns", "dns4", "dns6"} & set(protocols)):
        raise ConfigError(f"{where}: {text!r} is not a TCP address (e.g. /ip4/…/tcp/4101/p2p/…)")
    try:
        peer_id = peer_id_from_text(str(ma.value_for_protocol("p2p")))
    except DecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return BootstrapPeer(addr=str(ma), peer_id=peer_id)


def _line_of(lines: list[str], needle: str, start: int = 0) -> int:
    # Comment lines are skipped: the shipped file shows the format in a commented-out
    # [[peers]] table, which must not shift the entries below it.
    for i in range(start, len(lines)):
        if needle in lines[i] and not lines[i].lstrip().startswith("#"):
            return i + 1
    return 0


def parse_bootstrap_file(path: Path) -> list[BootstrapPeer]:
    """Peers listed in ``path``; a missing file is an empty list."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    lines = text.splitlines()
    unknown = set(data) - {"peers"}
    if unknown:
        key = sorted(unknown)[0]
        line = _line_of(lines, key)
        raise ConfigError(f"{path}:{line}: unknown key {key!r} (expected [[peers]] tables)")
    entries = data.get("peers", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}:{_line_of(lines, 'peers')}: 'peers' must be [[peers]] tables")
    peers: list[BootstrapPeer] = []
    cursor = 0
    for index, entry in enumerate(entries, 1):
        table_line = _line_of(lines, "[[peers]]", cursor)
        cursor = table_line
        where = f"{path}:{table_line or '?'} (peer {index})"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: each [[peers]] entry must be a table")
        extra = set(entry) - {"addr", "name"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r} (allowed: addr, name)")
        addr = entry.get("addr")
        if not isinstance(addr, str):
            raise ConfigError(f"{where}: 'addr' is required and must be a string")
        addr_line = _line_of(lines, addr, max(cursor - 1, 0)) or table_line
        peer = parse_peer_addr(addr, where=f"{path}:{addr_line}")
        name = entry.get("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: 'name' must be a string")
        peers.append(BootstrapPeer(addr=peer.addr, peer_id=peer.peer_id, name=name))
    return peers
