"""A private swarm: only allow-listed or certified peers may connect; the others
are cut off and the members keep working.  (A peer off the allow-list is a row of
tests/trust/test_attack_matrix.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from llamanet.adapters.libp2p_host import Libp2pByteStream
from llamanet.adapters.membership import EXCHANGE_TIMEOUT, MEMBER, serve_certificate_exchange
from llamanet.errors import ConfigError, LlamanetError
from llamanet.node.config import NodeConfig
from llamanet.node.node import Node
from llamanet.protocol.membership import issue_certificate
from llamanet.protocol.records import dht_key_for
from llamanet.testing import loopback_config
from llamanet.trust.keys import Identity, load_or_create_identity

from ..nodes import eventually, start_node


def test_the_allow_list_must_hold_peer_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a peer ID"):
        NodeConfig(home=tmp_path, allow_peers=("someone",))


def certify(admin: Identity, home: Path, *, swarm: str = "lab", days: float = 1) -> None:
    member = load_or_create_identity(home)
    cert = issue_certificate(
        admin,
        admin_peer=admin.peer_id,
        swarm=swarm,
        member=member.peer_id,
        now=time.time(),
        lifetime=days * 86400,
    )
    (home / "membership.cert").write_bytes(cert.encode())


async def test_members_certified_by_the_swarm_admin_get_in(tmp_path: Path) -> None:
    admin, other_admin = Identity.generate(), Identity.generate()
    homes = {name: tmp_path / name for name in ("a", "b", "outsider", "stranger", "replayer")}
    certify(admin, homes["a"])
    certify(admin, homes["b"])
    certify(other_admin, homes["stranger"])
    private: dict[str, Any] = {"swarm": "lab", "swarm_admin": admin.peer_id_text}
    async with (
        start_node(homes["a"], **private) as a,
        start_node(homes["b"], bootstrap=(a.addrs()[0],), **private) as b,
    ):
        assert (await b.ask("math.eval", "2+3", peer=a.peer_id_text)).output == 5
        assert (await a.ask("math.eval", "2*3", peer=b.peer_id_text)).output == 6

        def replay_a_certificate(intruder: Node) -> None:
            # An open node that shows a's (genuine) certificate as its own.
            stolen = (homes["a"] / "membership.cert").read_bytes()

            async def show(stream: INetStream) -> None:
                await serve_certificate_exchange(Libp2pByteStream(stream), stolen, lambda *_: True)

            intruder.host.set_stream_handler(MEMBER, show)

        cases: list[tuple[str, dict[str, Any], Callable[[Node], None] | None, str]] = [
            ("outsider", private, None, "missing"),
            ("stranger", {**private, "swarm_admin": other_admin.peer_id_text}, None, "wrong_admin"),
            ("replayer", {}, replay_a_certificate, "wrong_member"),
        ]
        for name, config, attack, reason in cases:
            async with start_node(homes[name], **config) as intruder:
                if attack is not None:
                    attack(intruder)
                await intruder.connect(a.addrs()[0], quiet=True)
                await eventually(
                    partial(lambda p: a.admission.refused_peers[p] >= 1, intruder.peer_id)
                )
                assert a.admission.refused_certificates[reason] >= 1, dict(
                    a.admission.refused_certificates
                )
                with pytest.raises(LlamanetError):
                    await intruder.ask("math.eval", "1+1", peer=a.peer_id_text, timeout=5)
        # The members are unaffected.
        assert (await b.ask("math.eval", "4*4", peer=a.peer_id_text)).output == 16


def test_a_bad_own_certificate_is_a_config_error_at_start(tmp_path: Path) -> None:
    admin = Identity.generate()
    certify(Identity.generate(), tmp_path)
    with pytest.raises(ConfigError, match="wrong_admin"):
        Node(loopback_config(tmp_path, swarm="lab", swarm_admin=admin.peer_id_text))
    with pytest.raises(ConfigError, match="swarm_admin"):
        NodeConfig(home=tmp_path, swarm_admin="someone")


async def test_an_outsider_can_neither_store_in_nor_walk_the_private_dht(tmp_path: Path) -> None:
    # The DHT is gated like every other protocol: during the certificate exchange
    # and after it failed, an outsider's KAD requests are reset unanswered.
    admin = Identity.generate()
    certify(admin, tmp_path / "a")
    private: dict[str, Any] = {"swarm": "lab", "swarm_admin": admin.peer_id_text}
    async with (
        start_node(tmp_path / "a", **private) as a,
        start_node(tmp_path / "outsider") as outsider,
    ):

        async def stall(stream: INetStream) -> None:
            await trio.sleep(EXCHANGE_TIMEOUT + 1)  # keeps the exchange open till it times out

        outsider.host.set_stream_handler(MEMBER, stall)
        await outsider.connect(a.addrs()[0], quiet=True)
        record = outsider.record
        key = dht_key_for(outsider.peer_id).encode()
        stored = await outsider.dht.kad.value_store._store_at_peer(
            ID(a.peer_id), key, record.envelope
        )
        assert not stored
        assert a.dht.kad.value_store.get(key) is None
        assert outsider.peer_id not in a.dht.routing_table_peers()
        assert not a.dht.server.answered
