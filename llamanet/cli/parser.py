"""The command line: sub-commands, their flags and help."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamanet.backends.builtin import BUILTIN_SKILLS
from llamanet.logs import LOG_FORMATS
from llamanet.node.config import DEFAULT_SWARM, LOG_LEVELS
from llamanet.version import __version__

from .commands import (
    cmd_ask,
    cmd_certify,
    cmd_dashboard,
    cmd_find,
    cmd_id,
    cmd_mcp,
    cmd_node,
    cmd_peers,
    cmd_run,
    cmd_solve,
    cmd_status,
)

EPILOG = """\
examples:
  llamanet node --listen /ip4/127.0.0.1/tcp/0 --no-mdns --skills math.eval
  llamanet find math.eval
  llamanet ask math.eval "2*(3+4)"
  llamanet ask text.echo "hi" --stream
  llamanet status --json
  llamanet mcp                      # an MCP server on stdio, for MCP clients to spawn
"""


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted both before and after the sub-command; the sub-command's copy only
    # overrides when given (SUPPRESS).
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--home",
        type=Path,
        default=default,
        help="node home directory (default: $LLAMANET_HOME or the platform data dir)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine-readable output",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamanet",
        description="A peer-to-peer network of LLM agent nodes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llamanet {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    skills_help = "; ".join(f"{name}: {desc}" for name, desc in BUILTIN_SKILLS.items())
    node = sub.add_parser(
        "node",
        help="run a node daemon",
        description="Run a node: join the DHT, publish a signed capability record, serve "
        "tasks, and expose the local API used by the other commands.",
    )
    _common(node, top=False)
    node.add_argument(
        "--listen", action="append", metavar="MULTIADDR", help="listen address (repeatable)"
    )
    node.add_argument(
        "--bootstrap", action="append", metavar="MULTIADDR", help="bootstrap peer (repeatable)"
    )
    node.add_argument("--bootstrap-file", type=Path, help="bootstrap peers TOML file")
    node.add_argument("--no-mdns", action="store_true", help="do not use mDNS on the LAN")
    node.add_argument(
        "--mdns-service",
        metavar="NAME",
        help="mDNS service name (default _llamanet._udp.local; _p2p._udp.local is the "
        "libp2p spec's, seen by other libp2p apps)",
    )
    node.add_argument(
        "--skills",
        action="append",
        metavar="LIST",
        help=f"built-in skills to serve, comma-separated (default: all) — {skills_help}",
    )
    node.add_argument(
        "--backend",
        action="append",
        metavar="SPEC",
        help="model backend, repeatable: auto (default: Ollama on 127.0.0.1:11434 and an "
        "OpenAI-compatible server on 127.0.0.1:8080 if they answer, plus the built-in "
        "skills), builtin, ollama[:URL], openai[:URL], gguf:PATH",
    )
    node.add_argument(
        "--no-warmup",
        action="store_true",
        help="do not probe each model with a short generation at start",
    )
    node.add_argument("--swarm", help="swarm name (default: main)")
    node.add_argument("--pow-difficulty", type=int, help="proof-of-work bits for identities")
    node.add_argument("--api-port", type=int, help="local API port (default: any free port)")
    node.add_argument("--api-host", help="address the API listens on (default: 127.0.0.1)")
    node.add_argument(
        "--api-remote",
        action="store_true",
        help="allow a non-loopback --api-host (the token is still required)",
    )
    node.add_argument("--config", type=Path, help="config file (default: HOME/config.toml)")
    node.add_argument("--log-level", choices=LOG_LEVELS, help="log verbosity (default: info)")
    node.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text (default) or json: one object per line"
    )
    node.set_defaults(func=cmd_node)

    ident = sub.add_parser("id", help="print this node's peer ID")
    _common(ident, top=False)
    ident.set_defaults(func=cmd_id)

    certify = sub.add_parser(
        "certify",
        help="as a private swarm's admin (this home's identity), sign a member's certificate",
    )
    _common(certify, top=False)
    certify.add_argument("peer", help="the member's peer ID (llamanet id, on the member)")
    certify.add_argument("--swarm", default=DEFAULT_SWARM, help="the swarm's name")
    certify.add_argument("--days", type=float, default=30.0, help="validity in days (default: 30)")
    certify.add_argument("--out", type=Path, default=Path("membership.cert"), help="file to write")
    certify.set_defaults(func=cmd_certify)

    status = sub.add_parser("status", help="show the daemon's status")
    _common(status, top=False)
    status.set_defaults(func=cmd_status)

    peers = sub.add_parser("peers", help="list known peers")
    _common(peers, top=False)
    peers.set_defaults(func=cmd_peers)

    find = sub.add_parser("find", help="find verified peers offering a capability")
    _common(find, top=False)
    find.add_argument("capability", help="capability name, e.g. math.eval or text")
    find.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    find.add_argument("--limit", type=int, default=20, help="at most this many peers")
    find.set_defaults(func=cmd_find)

    ask = sub.add_parser("ask", help="run a task on a peer that offers the capability")
    _common(ask, top=False)
    ask.add_argument("capability", help="capability name, e.g. math.eval")
    ask.add_argument("input", help="task input (a string; see --input-json)")
    ask.add_argument("--stream", action="store_true", help="print output as it streams")
    ask.add_argument("--input-json", action="store_true", help="parse INPUT as JSON")
    ask.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ask.add_argument("--peer", help="send to this peer ID only")
    ask.add_argument(
        "--market",
        choices=("cheapest", "fastest"),
        help="ask the best candidates for bids and award by this rule",
    )
    ask.add_argument("--price-cap", type=float, help="credits per 1k tokens at most")
    ask.add_argument(
        "--verify", type=int, default=1, metavar="K",
        help="run on K distinct peers and return the answer most of them agree on",
    )  # fmt: skip
    ask.add_argument(
        "--compare", default="exact",
        help="how answers are compared: exact, text, or a judge capability (default exact)",
    )  # fmt: skip
    ask.add_argument(
        "--session",
        metavar="NAME",
        help="chat session: the daemon keeps the conversation, so each ask is one turn",
    )
    ask.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    ask.set_defaults(func=cmd_ask)

    run = sub.add_parser("run", help="run a workflow (a DAG of steps in TOML or JSON) on the swarm")
    _common(run, top=False)
    run.add_argument("workflow", type=Path, help="workflow file (.toml or .json)")
    run.add_argument("--input", default="", help="the workflow's input (see --input-json)")
    run.add_argument("--input-json", action="store_true", help="parse --input as JSON")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    run.set_defaults(func=cmd_run, capability="")

    solve = sub.add_parser(
        "solve", help="have a planner peer turn a goal into a workflow, run it, show the answer"
    )
    _common(solve, top=False)
    solve.add_argument("goal", help="what you want done, in words")
    solve.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    solve.set_defaults(func=cmd_solve)

    dashboard = sub.add_parser(
        "dashboard", help="print the link that opens the daemon's live dashboard in a browser"
    )
    _common(dashboard, top=False)
    dashboard.add_argument("--open", action="store_true", help="open it in the default browser")
    dashboard.set_defaults(func=cmd_dashboard)

    mcp = sub.add_parser(
        "mcp",
        help="serve the swarm's capabilities as MCP tools (stdio or streamable HTTP)",
        description="Serve the swarm as MCP tools through the running node: one tool per "
        "capability its peers offer, plus ask, find, solve and status. With --transport "
        "http the endpoint is /mcp and needs 'Authorization: Bearer <token>'; the URL and "
        "token are in HOME/mcp.json while it runs, the token stays in HOME/mcp.token.",
    )
    _common(mcp, top=False)
    mcp.add_argument(
        "--transport", choices=("stdio", "http"), default="stdio", help="default: stdio"
    )
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP address (default: 127.0.0.1)")
    mcp.add_argument("--port", type=int, default=0, help="HTTP port (default: any free port)")
    mcp.add_argument(
        "--remote",
        action="store_true",
        help="allow a non-loopback --host (the token is still required)",
    )
    mcp.add_argument(
        "--refresh", type=float, default=5.0, metavar="SECONDS",
        help="how often to look for capabilities joining or leaving (default 5)",
    )  # fmt: skip
    mcp.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="stderr verbosity")
    mcp.set_defaults(func=cmd_mcp)
    return parser
