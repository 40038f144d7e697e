"""A node's proof-of-work nonce, cached beside its identity so a restart does not
solve it again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

from llamanet.protocol.pow import check_pow
from llamanet.trust.keys import Identity

POW_CACHE_FILENAME: Final = "identity.pow"


def cached_pow(home: Path, identity: Identity, difficulty: int) -> bytes | None:
    """The cached nonce, if it is ``identity``'s and has ``difficulty`` bits."""
    try:
        cached = json.loads((home / POW_CACHE_FILENAME).read_text())
        nonce = bytes.fromhex(cached["nonce"])
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: solve anew
        return None
    if cached.get("peer") == identity.peer_id_text and check_pow(
        identity.peer_id, nonce, difficulty
    ):
        return nonce
    return None


def save_pow(home: Path, identity: Identity, difficulty: int, nonce: bytes) -> None:
    path = home / POW_CACHE_FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"peer": identity.peer_id_text, "difficulty": difficulty, "nonce": nonce.hex()})
    )
    os.replace(tmp, path)
