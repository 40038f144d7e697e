"""Membership certificates of a private swarm, sans-I/O.

A swarm admin (any Ed25519 identity, named by its peer ID in every member's
config) signs one certificate per member: the swarm's name, the member's peer ID,
and a validity window.  Members present their certificate to each peer they
connect to on ``/llamanet/member/1.0.0`` (one frame each way); a peer that cannot
show a valid one is disconnected.  Revocation is by expiry: certificates are
short-lived and re-issued, and the allow-list can still exclude a peer outright.

The signature covers ``llamanet/member/v1`` and the msgpack encoding of
``[swarm, member, admin, iat, exp]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import msgpack

from llamanet.errors import DecodeError, MembershipError
from llamanet.protocol.codec import check_plain_value, pack_value
from llamanet.protocol.peer_ids import (
    Signer,
    is_valid_peer_id,
    peer_id_to_text,
    public_key_from_peer_id,
    verify_signature,
)

MEMBER_PROTOCOL: Final = "/llamanet/member/1.0.0"
MEMBER_DOMAIN: Final = b"llamanet/member/v1"
MAX_CERTIFICATE_SIZE: Final = 1024
CLOCK_SKEW: Final = 300
"""Seconds a certificate may claim to be issued in the future (clock drift)."""
MAX_LIFETIME: Final = 366 * 86400
_FIELDS: Final = ("swarm", "member", "admin", "iat", "exp", "sig")


@dataclass(frozen=True, kw_only=True, slots=True)
class MembershipCertificate:
    swarm: str
    member: bytes
    """The member's peer ID."""
    admin: bytes
    """The signing admin's peer ID."""
    iat: int
    """Unix seconds."""
    exp: int
    sig: bytes = b""

    def signed_bytes(self) -> bytes:
        return MEMBER_DOMAIN + pack_value([self.swarm, self.member, self.admin, self.iat, self.exp])

    def encode(self) -> bytes:
        return pack_value({name: getattr(self, name) for name in _FIELDS})


def issue_certificate(
    admin: Signer, *, admin_peer: bytes, swarm: str, member: bytes, now: float, lifetime: float
) -> MembershipCertificate:
    """A certificate for ``member``, valid from ``now`` for ``lifetime`` seconds."""
    if not is_valid_peer_id(member):
        raise ValueError("member must be an Ed25519 peer ID")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"lifetime must be between 1 s and {MAX_LIFETIME // 86400} days")
    unsigned = MembershipCertificate(
        swarm=swarm, member=member, admin=admin_peer, iat=int(now), exp=int(now + lifetime)
    )
    return replace(unsigned, sig=admin.sign(unsigned.signed_bytes()))


def decode_certificate(data: bytes) -> MembershipCertificate:
    """Parse a certificate's bytes; :class:`DecodeError` for anything malformed.
    Says nothing about validity: see :func:`check_certificate`."""
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise DecodeError(f"membership certificate over {MAX_CERTIFICATE_SIZE} bytes")
    try:
        obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"membership certificate is not msgpack: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != set(_FIELDS):
        raise DecodeError(f"a membership certificate is a map of {', '.join(_FIELDS)}")
    check_plain_value(obj)
    swarm, member, admin, iat, exp, sig = (obj[name] for name in _FIELDS)
    if not isinstance(swarm, str) or not 0 < len(swarm) <= 64:
        raise DecodeError("certificate swarm must be a name")
    for name, value in (("member", member), ("admin", admin)):
        if not isinstance(value, bytes) or not is_valid_peer_id(value):
            raise DecodeError(f"certificate {name} must be an Ed25519 peer ID")
    for name, value in (("iat", iat), ("exp", exp)):
        if type(value) is not int or not 0 <= value < 2**40:
            raise DecodeError(f"certificate {name} must be unix seconds")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise DecodeError("certificate signature must be 64 bytes")
    return MembershipCertificate(swarm=swarm, member=member, admin=admin, iat=iat, exp=exp, sig=sig)


def check_certificate(
    cert: MembershipCertificate, *, admin: bytes, swarm: str, peer: bytes, now: float
) -> None:
    """Raise :class:`MembershipError` unless ``cert`` admits ``peer`` to ``swarm``
    under ``admin`` at ``now``."""
    if cert.admin != admin:
        raise MembershipError("wrong_admin", f"signed by {peer_id_to_text(cert.admin)}")
    if cert.swarm != swarm:
        raise MembershipError("wrong_swarm", f"for swarm {cert.swarm!r}, not {swarm!r}")
    if cert.member != peer:
        raise MembershipError(
            "wrong_member", f"issued to {peer_id_to_text(cert.member)}, presented by another"
        )
    if not verify_signature(public_key_from_peer_id(admin), cert.signed_bytes(), cert.sig):
        raise MembershipError("bad_signature", "the admin's signature does not verify")
    if cert.iat > now + CLOCK_SKEW:
        raise MembershipError("future", "issued in the future")
    if cert.exp <= now or cert.exp - cert.iat > MAX_LIFETIME:
        raise MembershipError("expired", "expired" if cert.exp <= now else "lifetime too long")
