"""Bootstrap peer lists: parsing, and errors that point at the file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamanet.discovery.bootstrap import BootstrapPeer, parse_bootstrap_file, parse_peer_addr
from llamanet.errors import ConfigError
from llamanet.node.config import REPO_BOOTSTRAP_FILE
from llamanet.trust.keys import Identity

ALICE = Identity(b"\x21" * 32)
BOB = Identity(b"\x22" * 32)
CAROL = Identity(b"\x23" * 32)


def addr_of(identity: Identity, port: int = 4101) -> str:
    return f"/ip4/192.0.2.10/tcp/{port}/p2p/{identity.peer_id_text}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "peers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_location(exc: pytest.ExceptionInfo[ConfigError], path: Path) -> int:
    """The line number the error names (``<path>:<line>``)."""
    found = re.match(re.escape(str(path)) + r":(\d+)", str(exc.value))
    assert found, f"error does not start with {path}:<line>: {exc.value}"
    return int(found.group(1))


# --- parse_peer_addr -------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["/ip4/192.0.2.10/tcp/4101", "/ip6/::1/tcp/4101", "/dns4/peer.example/tcp/4101"]
)
def test_parse_peer_addr_accepts_tcp_addresses_with_a_peer_id(prefix: str) -> None:
    text = f"{prefix}/p2p/{ALICE.peer_id_text}"
    peer = parse_peer_addr(text, where="--bootstrap")
    assert peer == BootstrapPeer(addr=text, peer_id=ALICE.peer_id)
    assert peer.transport_addr == prefix


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/ip4/192.0.2.10/tcp/4101", "lacks the /p2p/<peer id> part"),
        (f"/ip4/192.0.2.10/udp/4101/p2p/{ALICE.peer_id_text}", "is not a TCP address"),
        (f"/p2p/{ALICE.peer_id_text}", "is not a TCP address"),
        ("not a multiaddr", "is not a multiaddr"),
        ("/ip4/192.0.2.10/tcp/99999/p2p/" + ALICE.peer_id_text, "is not a multiaddr"),
        ("/ip4/192.0.2.10/tcp/4101/p2p/notapeer", "is not a multiaddr"),
        (
            # A valid multihash, but an RSA-style (sha256) peer ID, not Ed25519.
            "/ip4/192.0.2.10/tcp/4101/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
            "not an Ed25519 peer ID",
        ),
    ],
)
def test_parse_peer_addr_names_where_the_bad_address_came_from(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)) as exc:
        parse_peer_addr(text, where="--bootstrap")
    assert str(exc.value).startswith("--bootstrap: ")


# --- parse_bootstrap_file: good files --------------------------------------------


def test_a_file_with_several_peers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""# our lab
[[peers]]
addr = "{addr_of(ALICE)}"
name = "lab server"

[[peers]]
addr = "{addr_of(BOB, 4102)}"   # no name

[[peers]]
name = "name first"
addr = "/dns4/peer.example/tcp/4103/p2p/{CAROL.peer_id_text}"
""",
    )
    peers = parse_bootstrap_file(path)
    assert peers == [
        BootstrapPeer(addr=addr_of(ALICE), peer_id=ALICE.peer_id, name="lab server"),
        BootstrapPeer(addr=addr_of(BOB, 4102), peer_id=BOB.peer_id, name=""),
        BootstrapPeer(
            addr=f"/dns4/peer.example/tcp/4103/p2p/{CAROL.peer_id_text}",
            peer_id=CAROL.peer_id,
            name="name first",
        ),
    ]


def test_a_file_with_only_comments_is_empty(tmp_path: Path) -> None:
    assert parse_bootstrap_file(write(tmp_path, "# nothing yet\n")) == []


def test_a_missing_file_is_an_empty_list(tmp_path: Path) -> None:
    assert parse_bootstrap_file(tmp_path / "absent.toml") == []


def test_the_shipped_file_parses() -> None:
    if not REPO_BOOTSTRAP_FILE.exists():
        pytest.skip(f"no shipped bootstrap file at {REPO_BOOTSTRAP_FILE} in this checkout")
    peers = parse_bootstrap_file(REPO_BOOTSTRAP_FILE)
    assert isinstance(peers, list)
    assert all(isinstance(p, BootstrapPeer) for p in peers)


# --- parse_bootstrap_file: errors name the file and line ------------------------


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[peers]]\naddr = "{addr_of(ALICE)}"\nname = lab\n')
    with pytest.raises(ConfigError, match=r"line 3") as exc:
        parse_bootstrap_file(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "peers.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_bootstrap_file(path)


def test_an_unknown_top_level_key_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[peers]]\naddr = "{addr_of(ALICE)}"\n\n[server]\nport = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'server'") as exc:
        parse_bootstrap_file(path)
    assert error_location(exc, path) == 4


def test_peers_that_are_not_tables_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'peers = "everyone"\n')
    with pytest.raises(ConfigError, match=r"'peers' must be \[\[peers\]\] tables") as exc:
        parse_bootstrap_file(path)
    assert error_location(exc, path) == 1


def test_a_peer_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "peers = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"each \[\[peers\]\] entry must be a table") as exc:
        parse_bootstrap_file(path)
    assert str(exc.value).startswith(f"{path}:")


GOOD_TWO = f"""# two good peers, then the one under test
[[peers]]
addr = "{addr_of(ALICE)}"
name = "first"

[[peers]]
addr = "{addr_of(BOB)}"

"""
THIRD_TABLE_LINE = GOOD_TWO.count("\n") + 1  # line 9


BAD_THIRD_ENTRIES = {
    # name: (entry body after its [[peers]] line, offset of the offending line, message)
    "no p2p part": ('name = "x"\naddr = "/ip4/192.0.2.10/tcp/4101"\n', 2, "lacks the /p2p/"),
    "not tcp": (
        f'addr = "/ip4/192.0.2.10/udp/4101/p2p/{CAROL.peer_id_text}"\n',
        1,
        "is not a TCP address",
    ),
    "bad peer id": (
        'addr = "/ip4/192.0.2.10/tcp/4101/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"\n',
        1,
        "not an Ed25519 peer ID",
    ),
    "bad multiaddr": ('addr = "/ip4/999.1.1.1/tcp/4101"\n', 1, "is not a multiaddr"),
    "missing addr": ('name = "no address"\n', 0, "'addr' is required"),
    "unknown key": (
        f'addr = "{addr_of(CAROL)}"\nport = 4101\n',
        0,
        "unknown key 'port' (allowed: addr, name)",
    ),
    "addr not a string": ("addr = 4101\n", 0, "'addr' is required and must be a string"),
    "name not a string": (f'addr = "{addr_of(CAROL)}"\nname = 7\n', 0, "'name' must be a string"),
}


@pytest.mark.parametrize("case", list(BAD_THIRD_ENTRIES))
def test_a_bad_third_entry_is_reported_on_its_own_line(tmp_path: Path, case: str) -> None:
    body, offset, message = BAD_THIRD_ENTRIES[case]
    path = write(tmp_path, GOOD_TWO + "[[peers]]\n" + body)
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        parse_bootstrap_file(path)
    assert error_location(exc, path) == THIRD_TABLE_LINE + offset


@pytest.mark.parametrize("case", ["missing addr", "not tcp"])
def test_a_bad_first_entry_is_reported_on_its_own_line(tmp_path: Path, case: str) -> None:
    body, offset, message = BAD_THIRD_ENTRIES[case]
    path = write(tmp_path, "\n\n[[peers]]\n" + body + GOOD_TWO)
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        parse_bootstrap_file(path)
    assert error_location(exc, path) == 3 + offset


def test_table_level_errors_say_which_peer(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_TWO + '[[peers]]\nname = "no address"\n')
    with pytest.raises(ConfigError, match=r"\(peer 3\)"):
        parse_bootstrap_file(path)


@pytest.mark.parametrize("case", ["missing addr", "not tcp", "unknown key"])
def test_lines_stay_right_below_commented_out_examples(tmp_path: Path, case: str) -> None:
    # The shipped file documents the format with a commented-out [[peers]] table;
    # entries appended below it must still be reported on their own lines.
    header = (
        "# Format: one [[peers]] table per peer.\n"
        "#\n"
        "#   [[peers]]\n"
        f'#   addr = "{addr_of(CAROL)}"\n'
        "\n"
    )
    body, offset, message = BAD_THIRD_ENTRIES[case]
    path = write(tmp_path, header + GOOD_TWO + "[[peers]]\n" + body)
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        parse_bootstrap_file(path)
    assert error_location(exc, path) == header.count("\n") + THIRD_TABLE_LINE + offset
