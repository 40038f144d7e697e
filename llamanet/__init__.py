"""llamanet: a peer-to-peer network of LLM agent nodes.

Use the running daemon::

    async with llamanet.connect() as client:
        answer = await client.ask("math.eval", "2*(3+4)")

or embed a node::

    async with llamanet.open_node(llamanet.NodeConfig(home=path)) as node:
        answer = await node.ask("math.eval", "2*(3+4)")
"""

from llamanet.api.connect import Client, connect
from llamanet.errors import (
    LlamanetError,
    NoCandidatesError,
    RecordError,
    RemoteError,
    RemoteProtocolError,
    TaskError,
    TransportError,
)
from llamanet.node.config import NodeConfig
from llamanet.node.node import Answer, Node, open_node
from llamanet.version import __version__

__all__ = [
    "Answer",
    "Client",
    "LlamanetError",
    "NoCandidatesError",
    "Node",
    "NodeConfig",
    "RecordError",
    "RemoteError",
    "RemoteProtocolError",
    "TaskError",
    "TransportError",
    "__version__",
    "connect",
    "open_node",
]
