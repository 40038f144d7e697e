"""A private swarm: only allow-listed peers may connect; the others are cut off
and the members keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamanet.errors import ConfigError, LlamanetError
from llamanet.node.config import NodeConfig
from llamanet.trust.keys import load_or_create_identity

from ..nodes import eventually, start_node


async def test_only_allow_listed_peers_get_in(tmp_path: Path) -> None:
    member_home, outsider_home = tmp_path / "member", tmp_path / "outsider"
    member_id = load_or_create_identity(member_home).peer_id_text
    async with (
        start_node(tmp_path / "private", allow_peers=(member_id,)) as private,
        start_node(member_home, bootstrap=(private.addrs()[0],)) as member,
        start_node(outsider_home) as outsider,
    ):
        answer = await member.ask("math.eval", "2+2", peer=private.peer_id_text)
        assert answer.output == 4

        await outsider.connect(private.addrs()[0], quiet=True)
        await eventually(lambda: private.refused_peers[outsider.peer_id] >= 1)
        with pytest.raises(LlamanetError):
            await outsider.ask("math.eval", "1+1", peer=private.peer_id_text, timeout=5)
        await eventually(
            lambda: (
                outsider.peer_id
                not in {bytes(p.to_bytes()) for p in private.host.get_connected_peers()}
            )
        )
        # The member is unaffected.
        assert (await member.ask("math.eval", "3*3", peer=private.peer_id_text)).output == 9
        assert private.peer_id_text not in {
            p["peer_id"] for p in outsider.peers() if p["capabilities"]
        }


def test_the_allow_list_must_hold_peer_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a peer ID"):
        NodeConfig(home=tmp_path, allow_peers=("someone",))
