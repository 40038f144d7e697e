"""The node's persistent Ed25519 identity.

The key lives in ``$LLAMANET_HOME/identity.key``: the libp2p protobuf encoding of
an Ed25519 private key (``{Type: Ed25519, Data: seed ‖ public key}``), the same
layout go-libp2p and Kubo use.  It is created once with mode 0600; a key file
that group or others can read is refused rather than silently tightened, since
the key may already have leaked.  Key material never appears in ``repr``, logs
or error messages.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

import nacl.signing

from llamanet.errors import IdentityError
from llamanet.protocol.peer_ids import peer_id_from_public_key, peer_id_to_text

IDENTITY_FILENAME: Final = "identity.key"
# protobuf PrivateKey{Type: Ed25519 (1), Data: 64 bytes}
_PRIVATE_KEY_PREFIX: Final = b"\x08\x01\x12\x40"


class Identity:
    """An Ed25519 key pair; implements :class:`llamanet.protocol.Signer`."""

    __slots__ = ("_peer_id", "_public_key", "_signing_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise IdentityError("an Ed25519 seed is 32 bytes")
        self._signing_key = nacl.signing.SigningKey(seed)
        self._public_key = bytes(self._signing_key.verify_key)
        self._peer_id = peer_id_from_public_key(self._public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @property
    def seed(self) -> bytes:
        """The private seed.  Only the adapter that builds the libp2p key pair uses it."""
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def peer_id(self) -> bytes:
        return self._peer_id

    @property
    def peer_id_text(self) -> str:
        return peer_id_to_text(self._peer_id)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signing_key.sign(data).signature)

    def marshal(self) -> bytes:
        """The key file contents."""
        return _PRIVATE_KEY_PREFIX + self.seed + self._public_key

    @classmethod
    def unmarshal(cls, data: bytes) -> Identity:
        if len(data) != 68 or not data.startswith(_PRIVATE_KEY_PREFIX):
            raise IdentityError("identity file does not hold an Ed25519 private key")
        identity = cls(data[4:36])
        if identity.public_key != data[36:]:
            raise IdentityError("identity file is corrupt: public key does not match the seed")
        return identity

    def __repr__(self) -> str:
        return f"Identity({self.peer_id_text})"


def ensure_home(home: Path) -> Path:
    """Create the node's home directory (mode 0700) if needed."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create home directory {home}: {exc.strerror}") from exc
    return home


def load_identity(path: Path) -> Identity:
    """Read an existing key file, refusing one that others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"no identity at {path}") from None
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"the key may have leaked. If it has not, run: chmod 600 {path}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from exc
    return Identity.unmarshal(data)


def load_or_create_identity(
    home: Path, *, new: Callable[[], Identity] = Identity.generate
) -> Identity:
    """The identity in ``home``, created with ``new`` on first use (a fresh random
    key; simnet passes one derived from its seed).

    Creation uses ``O_EXCL`` so two processes starting at once end up with the same
    key: the loser of the race reads the winner's file.
    """
    ensure_home(home)
    path = home / IDENTITY_FILENAME
    if path.exists():
        return load_identity(path)
    identity = new()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_identity(path)
    except OSError as exc:
        raise IdentityError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.write(fd, identity.marshal())
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise IdentityError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return identity
