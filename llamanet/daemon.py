"""``llamanet node``: a node plus its local API, until SIGINT or SIGTERM.  It sits
above both (the node knows nothing of the API that serves it)."""

from __future__ import annotations

import logging
import signal
import sys

import trio

from llamanet.api.server import serve_api
from llamanet.node.config import NodeConfig
from llamanet.node.node import Node, open_node

log = logging.getLogger(__name__)


def status_line(node: Node, api_url: str) -> str:
    caps = ", ".join(node.worker.capabilities()) or "none"
    addrs = " ".join(node.addrs()) or "(no addresses)"
    return (
        f"llamanet node {node.peer_id_text}\n"
        f"  listening  {addrs}\n"
        f"  serving    {caps}\n"
        f"  dht peers  {node.dht.routing_table_size()}   swarm {node.config.swarm}"
        f"   mdns {'on' if node.config.mdns else 'off'}\n"
        f"  api        {api_url} (token in {node.config.api_file})"
    )


async def run_daemon(config: NodeConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(config) as node, trio.open_nursery() as nursery:
            api_url = await nursery.start(serve_api, node)
            print(status_line(node, api_url), file=sys.stderr, flush=True)
            async for signum in signals:
                log.info("%s received; shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("node stopped")
