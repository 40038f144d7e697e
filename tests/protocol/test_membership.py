"""Membership certificates: what the admin signs, and every way one is refused."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamanet.errors import DecodeError, MembershipError
from llamanet.protocol.codec import pack_value
from llamanet.protocol.membership import (
    CLOCK_SKEW,
    MAX_CERTIFICATE_SIZE,
    check_certificate,
    decode_certificate,
    issue_certificate,
)
from llamanet.trust.keys import Identity

ADMIN, MEMBER, OTHER = Identity(b"a" * 32), Identity(b"m" * 32), Identity(b"o" * 32)
NOW = 1_800_000_000.0


def issued(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "admin_peer": ADMIN.peer_id,
        "swarm": "lab",
        "member": MEMBER.peer_id,
        "now": NOW,
        "lifetime": 86400,
    }
    fields.update(overrides)
    return issue_certificate(ADMIN, **fields).encode()  # type: ignore[arg-type]


def check(data: bytes, *, peer: bytes = MEMBER.peer_id, now: float = NOW + 10) -> None:
    check_certificate(
        decode_certificate(data), admin=ADMIN.peer_id, swarm="lab", peer=peer, now=now
    )


def test_a_certificate_round_trips_and_admits_its_member() -> None:
    data = issued()
    cert = decode_certificate(data)
    assert (cert.swarm, cert.member, cert.admin) == ("lab", MEMBER.peer_id, ADMIN.peer_id)
    assert cert.exp - cert.iat == 86400
    check(data)


@pytest.mark.parametrize(
    ("reason", "data", "peer", "now"),
    [
        ("wrong_member", issued(), OTHER.peer_id, NOW),
        ("wrong_swarm", issued(swarm="elsewhere"), MEMBER.peer_id, NOW),
        ("expired", issued(), MEMBER.peer_id, NOW + 86400),
        ("future", issued(now=NOW + CLOCK_SKEW + 60), MEMBER.peer_id, NOW),
    ],
)
def test_refusals_say_why(reason: str, data: bytes, peer: bytes, now: float) -> None:
    with pytest.raises(MembershipError) as info:
        check(data, peer=peer, now=now)
    assert info.value.reason == reason


def test_a_certificate_signed_by_someone_else_is_refused() -> None:
    # Signed by OTHER but naming the real admin: the signature gives it away.
    forged = issue_certificate(
        OTHER, admin_peer=ADMIN.peer_id, swarm="lab", member=MEMBER.peer_id, now=NOW, lifetime=60
    )
    with pytest.raises(MembershipError) as info:
        check(forged.encode())
    assert info.value.reason == "bad_signature"
    # Honestly signed by OTHER: the wrong admin.
    own = issue_certificate(
        OTHER, admin_peer=OTHER.peer_id, swarm="lab", member=MEMBER.peer_id, now=NOW, lifetime=60
    )
    with pytest.raises(MembershipError) as info:
        check(own.encode())
    assert info.value.reason == "wrong_admin"


def test_an_edited_certificate_no_longer_verifies() -> None:
    cert = decode_certificate(issued())
    for edited in (replace(cert, exp=cert.exp + 86400 * 300), replace(cert, member=OTHER.peer_id)):
        with pytest.raises(MembershipError, match="bad_signature"):
            check_certificate(edited, admin=ADMIN.peer_id, swarm="lab", peer=edited.member, now=NOW)


def test_the_issuer_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="peer ID"):
        issued(member=b"not a peer")
    with pytest.raises(ValueError, match="lifetime"):
        issued(lifetime=0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        pack_value([1, 2, 3]),
        pack_value({"swarm": "lab"}),
        b"\x00" * (MAX_CERTIFICATE_SIZE + 1),
    ],
)
def test_malformed_bytes_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_certificate(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_certificate(data)


@given(
    st.fixed_dictionaries(
        {
            "swarm": st.text(max_size=70) | st.binary(max_size=5),
            "member": st.binary(max_size=40) | st.just(MEMBER.peer_id),
            "admin": st.binary(max_size=40) | st.just(ADMIN.peer_id),
            "iat": st.integers(-(2**63), 2**64 - 1) | st.floats(),
            "exp": st.integers(-(2**63), 2**64 - 1),
            "sig": st.binary(max_size=70),
        }
    )
)
def test_well_shaped_maps_with_any_values_decode_or_refuse_cleanly(fields: dict) -> None:  # type: ignore[type-arg]
    try:
        cert = decode_certificate(pack_value(fields))
    except DecodeError:
        return
    with pytest.raises(MembershipError):
        check_certificate(cert, admin=ADMIN.peer_id, swarm="lab", peer=MEMBER.peer_id, now=NOW)
