from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from llamanet.errors import IdentityError
from llamanet.trust.keys import IDENTITY_FILENAME, Identity, load_identity, load_or_create_identity


def test_created_once_with_mode_0600(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = load_or_create_identity(home)
    path = home / IDENTITY_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    second = load_or_create_identity(home)
    assert second.peer_id == first.peer_id


def test_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    path = tmp_path / IDENTITY_FILENAME
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match=r"accessible by group or others \(mode 0644\)"):
        load_or_create_identity(tmp_path)


def test_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILENAME
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="does not hold an Ed25519"):
        load_identity(path)


def test_refuses_mismatched_public_key(tmp_path: Path) -> None:
    data = bytearray(Identity.generate().marshal())
    data[-1] ^= 1
    path = tmp_path / IDENTITY_FILENAME
    path.write_bytes(bytes(data))
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="corrupt"):
        load_identity(path)


def test_key_never_appears_in_repr_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    identity = load_or_create_identity(tmp_path)
    seed = identity.seed
    text = repr(identity) + str(identity) + caplog.text
    for form in (seed.hex(), repr(seed), seed.hex().upper()):
        assert form not in text
    assert identity.peer_id_text in repr(identity)


def test_libp2p_file_layout() -> None:
    identity = Identity(b"\x09" * 32)
    data = identity.marshal()
    assert data[:4] == b"\x08\x01\x12\x40" and len(data) == 68
    assert Identity.unmarshal(data).peer_id == identity.peer_id
