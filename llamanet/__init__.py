"""llamanet: a peer-to-peer network of LLM agent nodes.

Use the running daemon::

    async with llamanet.connect() as client:
        answer = await client.ask("math.eval", "2*(3+4)")

or embed a node::

    async with llamanet.open_node(llamanet.NodeConfig(home=path)) as node:
        answer = await node.ask("math.eval", "2*(3+4)")
"""

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("llamanet")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

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
