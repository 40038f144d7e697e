"""llamanet: a peer-to-peer network of LLM agent nodes.

Embed a node::

    async with llamanet.open_node(llamanet.NodeConfig(home=path)) as node:
        answer = await node.ask("math.eval", "2*(3+4)")
"""

from importlib.metadata import PackageNotFoundError, version

from llamanet.errors import (
    LlamanetError,
    NoCandidatesError,
    RecordError,
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
    "LlamanetError",
    "NoCandidatesError",
    "Node",
    "NodeConfig",
    "RecordError",
    "RemoteProtocolError",
    "TaskError",
    "TransportError",
    "__version__",
    "open_node",
]
