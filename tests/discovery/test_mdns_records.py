"""What goes into and comes out of mDNS answers.  Pure: no sockets, no zeroconf."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamanet.discovery.mdns_records import (
    DEFAULT_SERVICE,
    MAX_TXT_STRING,
    PEER_NAME_LENGTH,
    SPEC_SERVICE,
    MdnsPeer,
    decode_txt_rdata,
    encode_txt_rdata,
    new_peer_name,
    normalize_service,
    peer_from_answer,
    txt_strings,
)
from llamanet.errors import DecodeError
from llamanet.trust.keys import Identity

ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
A = ALICE.peer_id_text
B = BOB.peer_id_text
INSTANCE = "k3x9q2m7w1z8r4t6y5u0p2o9i8l7j6h5." + DEFAULT_SERVICE


def dnsaddr(addr: str) -> bytes:
    return b"dnsaddr=" + addr.encode()


# --- normalize_service ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("_llamanet._udp.local", "_llamanet._udp.local."),
        ("_llamanet._udp.local.", "_llamanet._udp.local."),
        ("_P2P._UDP.Local", "_p2p._udp.local."),
        ("  _p2p._udp.local  ", "_p2p._udp.local."),
        ("_x._tcp.local", "_x._tcp.local."),
        ("_" + "a" * 15 + "._udp.local", "_" + "a" * 15 + "._udp.local."),
    ],
)
def test_normalize_service_accepts_and_canonicalises(given_name: str, expected: str) -> None:
    assert normalize_service(given_name) == expected


def test_the_module_constants_are_already_normal() -> None:
    assert normalize_service(DEFAULT_SERVICE) == DEFAULT_SERVICE
    assert normalize_service(SPEC_SERVICE) == SPEC_SERVICE


@pytest.mark.parametrize(
    "bad",
    [
        "_x._udp.com",  # not .local
        "x._udp.local",  # label without the leading underscore
        "_x._sctp.local",  # neither _udp nor _tcp
        "_x.udp.local",  # protocol without underscore
        "_" + "a" * 16 + "._udp.local",  # label over 15 characters
        "_._udp.local",  # empty label
        "_udp.local",  # missing the service label
        "_x._udp",  # missing the domain
        "local",
        "",
        "a._x._udp.local",  # one label too many
    ],
)
def test_normalize_service_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ValueError, match=r"mDNS service name|service label"):
        normalize_service(bad)


# --- new_peer_name -------------------------------------------------------------


def test_new_peer_name_is_32_lowercase_alphanumerics() -> None:
    name = new_peer_name()
    assert len(name) == PEER_NAME_LENGTH == 32
    assert re.fullmatch(r"[a-z0-9]{32}", name)


def test_new_peer_name_differs_each_call() -> None:
    names = {new_peer_name() for _ in range(50)}
    assert len(names) == 50


# --- txt_strings ---------------------------------------------------------------


def test_txt_strings_one_dnsaddr_per_full_multiaddr() -> None:
    addrs = [f"/ip4/10.0.0.1/tcp/4001/p2p/{A}", f"/ip6/::1/tcp/4001/p2p/{A}"]
    assert txt_strings(addrs) == [dnsaddr(addrs[0]), dnsaddr(addrs[1])]


def test_txt_strings_repeat_the_dnsaddr_key_never_number_it() -> None:
    strings = txt_strings(f"/ip4/10.0.0.{i}/tcp/4001/p2p/{A}" for i in range(1, 6))
    assert len(strings) == 5
    assert all(s.startswith(b"dnsaddr=/") for s in strings)
    assert not any(re.match(rb"dnsaddr\d", s) for s in strings)


def test_txt_strings_skip_addresses_without_p2p() -> None:
    full = f"/ip4/10.0.0.1/tcp/4001/p2p/{A}"
    assert txt_strings(["/ip4/10.0.0.1/tcp/4001", full]) == [dnsaddr(full)]


def test_txt_strings_skip_addresses_too_long_for_one_string() -> None:
    fits = (
        "/dns4/" + "a" * (MAX_TXT_STRING - len(f"dnsaddr=/dns4//tcp/1/p2p/{A}")) + f"/tcp/1/p2p/{A}"
    )
    too_long = "/dns4/a" + fits[len("/dns4/") :]
    assert len(dnsaddr(fits)) == MAX_TXT_STRING
    assert len(dnsaddr(too_long)) == MAX_TXT_STRING + 1
    assert txt_strings([fits, too_long]) == [dnsaddr(fits)]


def test_txt_strings_of_nothing_is_empty() -> None:
    assert txt_strings([]) == []


# --- TXT rdata -----------------------------------------------------------------


@given(st.lists(st.binary(max_size=MAX_TXT_STRING), max_size=20))
def test_txt_rdata_round_trips(strings: list[bytes]) -> None:
    rdata = encode_txt_rdata(strings)
    assert len(rdata) == sum(1 + len(s) for s in strings)
    assert decode_txt_rdata(rdata) == strings


@given(st.binary(max_size=600))
def test_decode_txt_rdata_decodes_or_raises_decode_error(rdata: bytes) -> None:
    try:
        strings = decode_txt_rdata(rdata)
    except DecodeError:
        return
    assert encode_txt_rdata(strings) == rdata


def test_txt_rdata_known_bytes() -> None:
    assert encode_txt_rdata([b"ab", b"", b"c"]) == b"\x02ab\x00\x01c"
    assert decode_txt_rdata(b"\x02ab\x00\x01c") == [b"ab", b"", b"c"]
    assert decode_txt_rdata(b"") == []


def test_decode_txt_rdata_refuses_a_length_past_the_end() -> None:
    with pytest.raises(DecodeError):
        decode_txt_rdata(b"\x05abc")


def test_encode_txt_rdata_refuses_a_string_over_255_bytes() -> None:
    assert len(encode_txt_rdata([b"x" * MAX_TXT_STRING])) == MAX_TXT_STRING + 1
    with pytest.raises(ValueError, match="255 bytes"):
        encode_txt_rdata([b"ok", b"x" * (MAX_TXT_STRING + 1)])


# --- peer_from_answer ----------------------------------------------------------


def test_peer_from_ptr_and_txt_alone() -> None:
    strings = txt_strings([f"/ip4/10.0.0.1/tcp/4001/p2p/{A}", f"/ip6/fe80::1/tcp/4001/p2p/{A}"])
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer == MdnsPeer(
        peer_id=ALICE.peer_id,
        addrs=("/ip4/10.0.0.1/tcp/4001", "/ip6/fe80::1/tcp/4001"),
        instance=INSTANCE,
    )


def test_peer_from_answer_survives_the_rdata_round_trip() -> None:
    rdata = encode_txt_rdata(txt_strings([f"/ip4/10.0.0.1/tcp/4001/p2p/{A}"]))
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, decode_txt_rdata(rdata))
    assert peer is not None
    assert peer.peer_id == ALICE.peer_id
    assert peer.addrs == ("/ip4/10.0.0.1/tcp/4001",)


def test_peer_from_answer_dedupes_and_keeps_order() -> None:
    one, two, three = (f"/ip4/10.0.0.{i}/tcp/4001" for i in (3, 1, 2))
    strings = [dnsaddr(f"{a}/p2p/{A}") for a in (one, two, one, three, two)]
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert peer.addrs == (one, two, three)


def test_peer_from_answer_ignores_strings_that_are_not_dnsaddr() -> None:
    strings = [
        b"foo=bar",
        b"",
        b"dnsaddr",
        b"DNSADDR=/ip4/10.0.0.9/tcp/1/p2p/" + A.encode(),
        dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}"),
        A.encode(),  # what old js-libp2p put in its TXT record
    ]
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert peer.addrs == ("/ip4/10.0.0.1/tcp/4001",)


@pytest.mark.parametrize(
    "bad",
    [
        b"dnsaddr=",
        b"dnsaddr=not a multiaddr",
        b"dnsaddr=/ip4/999.0.0.1/tcp/4001/p2p/" + A.encode(),
        b"dnsaddr=/ip4/10.0.0.1/tcp/99999/p2p/" + A.encode(),
        b"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/notapeerid",
        b"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/" + A.lower().encode(),
        b"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/" + A[:-1].encode(),
        b"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/QmNPubsDWATVngE3d5WDSNe7eVrFLuk38qb9t6vdLnu2aK",
        b"dnsaddr=/ip4/10.0.0.1/tcp/4001",  # no /p2p/
        b"dnsaddr=/ip4/10.0.0.1/udp/4001/quic-v1/p2p/" + A.encode(),  # no tcp
        b"dnsaddr=/ip4/10.0.0.1/p2p/" + A.encode(),  # no tcp
        b"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/\xff\xfe",
        b"dnsaddr=\x80\x81",
    ],
)
def test_peer_from_answer_ignores_malformed_or_unusable_addrs(bad: bytes) -> None:
    assert peer_from_answer(INSTANCE, DEFAULT_SERVICE, [bad]) is None
    good = dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}")
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, [bad, good])
    assert peer is not None
    assert (peer.peer_id, peer.addrs) == (ALICE.peer_id, ("/ip4/10.0.0.1/tcp/4001",))


def test_peer_from_answer_ignores_addrs_naming_another_peer() -> None:
    strings = [
        dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}"),
        dnsaddr(f"/ip4/10.0.0.2/tcp/4001/p2p/{B}"),
        dnsaddr(f"/ip4/10.0.0.3/tcp/4001/p2p/{A}"),
    ]
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert peer.peer_id == ALICE.peer_id
    assert peer.addrs == ("/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.3/tcp/4001")


def test_the_first_valid_dnsaddr_picks_the_peer() -> None:
    strings = [
        b"dnsaddr=garbage",
        dnsaddr(f"/ip4/10.0.0.2/tcp/4001/p2p/{B}"),
        dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}"),
    ]
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert (peer.peer_id, peer.addrs) == (BOB.peer_id, ("/ip4/10.0.0.2/tcp/4001",))


@pytest.mark.parametrize(
    ("instance", "service"),
    [
        ("abc." + SPEC_SERVICE, DEFAULT_SERVICE),
        ("abc." + DEFAULT_SERVICE, SPEC_SERVICE),
        ("abc_llamanet._udp.local.", DEFAULT_SERVICE),  # no dot before the service
        (DEFAULT_SERVICE, DEFAULT_SERVICE),  # the service itself, no instance label
        ("abc._llamanet._tcp.local.", DEFAULT_SERVICE),
    ],
)
def test_peer_from_answer_refuses_the_wrong_service(instance: str, service: str) -> None:
    strings = [dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}")]
    assert peer_from_answer(instance, service, strings) is None


def test_peer_from_answer_matches_the_service_case_insensitively() -> None:
    instance = "ABCdef._LlamaNet._UDP.Local."
    strings = [dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}")]
    peer = peer_from_answer(instance, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert peer.instance == instance
    assert peer_from_answer("abc." + DEFAULT_SERVICE, "_LLAMANET._udp.LOCAL.", strings) is not None


def test_peer_from_answer_skips_ourselves() -> None:
    strings = [dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}")]
    assert peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings, self_peer=ALICE.peer_id) is None
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings, self_peer=BOB.peer_id)
    assert peer is not None
    assert peer.peer_id == ALICE.peer_id


def test_peer_from_answer_without_a_valid_dnsaddr_is_none() -> None:
    assert peer_from_answer(INSTANCE, DEFAULT_SERVICE, []) is None
    assert peer_from_answer(INSTANCE, DEFAULT_SERVICE, [b"foo=bar", b"dnsaddr=/x"]) is None
    assert peer_from_answer(INSTANCE, DEFAULT_SERVICE, txt_strings(["/ip4/10.0.0.1/tcp/1"])) is None


def test_peer_from_answer_accepts_any_iterable() -> None:
    strings = (dnsaddr(f"/ip4/10.0.0.{i}/tcp/4001/p2p/{A}") for i in (1, 2))
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert len(peer.addrs) == 2


def test_an_answer_shaped_like_js_libp2p_mdns_resolves() -> None:
    # @libp2p/mdns (query.ts gotQuery) answers with one PTR record and one TXT record
    # per multiaddr, each holding the single string "dnsaddr=<multiaddr with /p2p/>";
    # after decoding the TXT rdata the receiver simply has several strings.
    instance = "qzd1x8a3bnm0c7e6f5g4h2j9k8l7p6o5." + SPEC_SERVICE
    records = [
        encode_txt_rdata([dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}")]),
        encode_txt_rdata([dnsaddr(f"/ip4/10.0.0.1/tcp/4002/ws/p2p/{A}")]),
        encode_txt_rdata([dnsaddr(f"/ip4/192.168.1.7/tcp/4001/p2p/{A}")]),
        encode_txt_rdata([dnsaddr(f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{A}")]),
    ]
    strings = [s for rdata in records for s in decode_txt_rdata(rdata)]
    peer = peer_from_answer(instance, normalize_service("_p2p._udp.local"), strings)
    assert peer == MdnsPeer(
        peer_id=ALICE.peer_id,
        addrs=("/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.1/tcp/4002/ws", "/ip4/192.168.1.7/tcp/4001"),
        instance=instance,
    )


def test_what_we_advertise_is_what_we_read_back() -> None:
    addrs = [
        f"/ip4/10.0.0.1/tcp/4001/p2p/{A}",
        f"/ip6/fe80::1/tcp/4001/p2p/{A}",
        "/ip4/1.2.3.4/tcp/1",
    ]
    rdata = encode_txt_rdata(txt_strings(addrs))
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, decode_txt_rdata(rdata))
    assert peer is not None
    assert peer.addrs == ("/ip4/10.0.0.1/tcp/4001", "/ip6/fe80::1/tcp/4001")


def test_a_circuit_relay_addr_is_not_credited_to_the_relay() -> None:
    relayed = f"/ip4/10.0.0.9/tcp/4001/p2p/{B}/p2p-circuit/p2p/{A}"
    strings = [dnsaddr(relayed), dnsaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{A}")]
    peer = peer_from_answer(INSTANCE, DEFAULT_SERVICE, strings)
    assert peer is not None
    assert peer.peer_id == ALICE.peer_id
