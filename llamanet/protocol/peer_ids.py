"""Ed25519 public keys, libp2p peer IDs, and signature checks.

A libp2p peer ID for an Ed25519 key is the *identity* multihash of the key's
protobuf encoding, so the key can be read back out of the ID: a record or receipt
signed by a peer can be checked with nothing but the peer ID.  This module knows
that encoding without importing libp2p, so the protocol core stays free of I/O.
"""

from __future__ import annotations

import functools
from typing import Final, Protocol

import base58
import nacl.exceptions
import nacl.signing

from llamanet.errors import DecodeError

ED25519_KEY_TYPE: Final = 1
# protobuf PublicKey{Type: Ed25519 (field 1, varint), Data: 32 bytes (field 2)}
_ED25519_PUBKEY_PREFIX: Final = b"\x08\x01\x12\x20"
# identity multihash (code 0x00) of a 36-byte protobuf key
_PEER_ID_PREFIX: Final = b"\x00\x24" + _ED25519_PUBKEY_PREFIX
PEER_ID_LENGTH: Final = len(_PEER_ID_PREFIX) + 32


class Signer(Protocol):
    """Anything that signs with an Ed25519 key (trust.keys.Identity implements it)."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    @property
    def peer_id(self) -> bytes:
        """The libp2p peer ID (bytes) of that key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``data``."""
        ...


def marshal_public_key(public_key: bytes) -> bytes:
    """The libp2p protobuf encoding of a raw Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return _ED25519_PUBKEY_PREFIX + public_key


def unmarshal_public_key(data: bytes) -> bytes:
    """The raw key from its libp2p protobuf encoding; only Ed25519 is accepted."""
    if len(data) != 36 or not data.startswith(_ED25519_PUBKEY_PREFIX):
        raise DecodeError("not an Ed25519 public key in libp2p encoding")
    return data[4:]


def peer_id_from_public_key(public_key: bytes) -> bytes:
    """The peer ID bytes of a raw Ed25519 public key."""
    return b"\x00\x24" + marshal_public_key(public_key)


def public_key_from_peer_id(peer_id: bytes) -> bytes:
    """The raw Ed25519 key inside a peer ID; :class:`DecodeError` for any other kind
    of peer ID (RSA and secp256k1 IDs are sha256 hashes and carry no key)."""
    if len(peer_id) != PEER_ID_LENGTH or not peer_id.startswith(_PEER_ID_PREFIX):
        raise DecodeError("not an Ed25519 peer ID")
    return peer_id[len(_PEER_ID_PREFIX) :]


def is_valid_peer_id(peer_id: object) -> bool:
    return (
        isinstance(peer_id, bytes)
        and len(peer_id) == PEER_ID_LENGTH
        and peer_id.startswith(_PEER_ID_PREFIX)
    )


@functools.lru_cache(maxsize=4096)
def peer_id_to_text(peer_id: bytes) -> str:
    """Base58btc, the form people see (``12D3KooW…``).  Cached: base58 is pure
    Python and the same few peers are named on every task."""
    return str(base58.b58encode(peer_id).decode("ascii"))


def peer_id_from_text(text: str) -> bytes:
    """Inverse of :func:`peer_id_to_text`; :class:`DecodeError` if it is not an Ed25519
    peer ID."""
    try:
        raw = bytes(base58.b58decode(text.encode("ascii")))
    except (ValueError, UnicodeEncodeError) as exc:
        raise DecodeError(f"not a base58 peer ID: {text!r}") from exc
    if not is_valid_peer_id(raw):
        raise DecodeError(f"not an Ed25519 peer ID: {text!r}")
    return raw


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Ed25519 verification that never raises for bad input."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
    return True
