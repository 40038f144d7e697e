"""The ``llamanet`` command.

``llamanet node`` runs the daemon; every other sub-command talks to the daemon of
``--home`` (or ``$LLAMANET_HOME``) through its local API, except ``id``, which
only reads the identity file.  Read commands print tables for people and take
``--json`` for programs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from llamanet.api.client import ApiClient
from llamanet.backends.builtin import BUILTIN_SKILLS
from llamanet.errors import ConfigError, LlamanetError
from llamanet.logs import LOG_FORMATS, setup_logging
from llamanet.node.config import DEFAULT_SWARM, LOG_LEVELS, NodeConfig, default_home, load_config
from llamanet.protocol.capabilities import validate_swarm_name
from llamanet.protocol.membership import issue_certificate
from llamanet.protocol.peer_ids import peer_id_from_text
from llamanet.trust.keys import load_or_create_identity
from llamanet.version import __version__

log = logging.getLogger("llamanet")

EPILOG = """\
examples:
  llamanet node --listen /ip4/127.0.0.1/tcp/0 --no-mdns --skills math.eval
  llamanet find math.eval
  llamanet ask math.eval "2*(3+4)"
  llamanet ask text.echo "hi" --stream
  llamanet status --json
  llamanet mcp                      # an MCP server on stdio, for MCP clients to spawn
"""


# -- output helpers ----------------------------------------------------------------


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(title), *(len(r[i]) for r in cells)) for i, (_, title) in enumerate(columns)]
    lines = ["  ".join(title.ljust(w) for (_, title), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _print_output(output: Any) -> None:
    if isinstance(output, str):
        print(output)
    else:
        print(json.dumps(output, sort_keys=True))


# -- sub-commands --------------------------------------------------------------------


def cmd_id(args: argparse.Namespace) -> int:
    identity = load_or_create_identity(args.home)
    if args.json:
        _print_json({"peer_id": identity.peer_id_text})
    else:
        print(identity.peer_id_text)
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    admin = load_or_create_identity(args.home)
    try:
        member = peer_id_from_text(args.peer)
    except LlamanetError as exc:
        raise ConfigError(f"{args.peer!r} is not a peer ID") from exc
    validate_swarm_name(args.swarm)
    try:
        cert = issue_certificate(
            admin,
            admin_peer=admin.peer_id,
            swarm=args.swarm,
            member=member,
            now=time.time(),
            lifetime=args.days * 86400,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    args.out.write_bytes(cert.encode())
    summary = {
        "certificate": str(args.out),
        "member": args.peer,
        "swarm": args.swarm,
        "expires": cert.exp,
        "swarm_admin": admin.peer_id_text,
    }
    if args.json:
        _print_json(summary)
    else:
        print(f"wrote {args.out} for {args.peer} (swarm {args.swarm!r}, {args.days:g} days)")
        print("the member puts it in its home as membership.cert; every member's config.toml has")
        print(f'  swarm = "{args.swarm}"\n  swarm_admin = "{admin.peer_id_text}"')
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with ApiClient(args.home) as api:
        status = api.get("/v1/status")
    if args.json:
        _print_json(status)
        return 0
    order = [
        "peer_id", "version", "swarm", "capabilities", "models", "dht_peers", "connected_peers",
        "known_records", "tasks_running", "tasks_served", "tasks_rejected", "tasks_sent",
        "records_rejected", "record_seq", "record_expires_in", "uptime_s", "api",
    ]  # fmt: skip
    width = max(len(k) for k in order)
    for key in order:
        value = status.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            value = ", ".join(m.get("name", "?") for m in value)
        print(f"{key.ljust(width)}  {_cell(value)}")
    for addr in status.get("addrs", []):
        print(f"{'addr'.ljust(width)}  {addr}")
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    with ApiClient(args.home) as api:
        peers = api.get("/v1/peers")
    if args.json:
        _print_json(peers)
        return 0
    print(
        _table(
            peers,
            [
                ("peer_id", "PEER"),
                ("connected", "CONNECTED"),
                ("in_routing_table", "DHT"),
                ("capabilities", "CAPABILITIES"),
                ("load", "LOAD"),
                ("reputation", "REPUTATION"),
                ("record_expires_in", "RECORD TTL"),
                ("source", "VIA"),
            ],
        )
    )
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    with ApiClient(args.home) as api:
        found = api.get("/v1/find", cap=args.capability, timeout=args.timeout, limit=args.limit)
    if args.json:
        _print_json(found)
        return 0
    for row in found:
        row["models"] = [m["name"] for m in row.get("models", [])]
    print(
        _table(
            found,
            [
                ("peer_id", "PEER"),
                ("capabilities", "CAPABILITIES"),
                ("models", "MODELS"),
                ("load", "LOAD"),
                ("record_expires_in", "RECORD TTL"),
            ],
        )
    )
    return 0 if found else 1


def _parse_input(args: argparse.Namespace) -> Any:
    if args.input_json:
        try:
            return json.loads(args.input)
        except ValueError as exc:
            raise LlamanetError(f"--input-json: INPUT is not JSON: {exc}") from exc
    # Plain text for the model capabilities means what anyone would expect.
    if args.capability == "llm.chat":
        return {"messages": [{"role": "user", "content": args.input}]}
    if args.capability == "llm.generate":
        return {"prompt": args.input}
    if args.capability == "llm.embed":
        return {"texts": [args.input]}
    return args.input


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise LlamanetError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def cmd_ask(args: argparse.Namespace) -> int:
    body = {
        "cap": args.capability,
        "input": _parse_input(args),
        "params": _parse_params(args.param),
        "timeout": args.timeout,
        "peer": args.peer,
        "stream": args.stream,
        "session": args.session,
    }
    if args.verify > 1:
        body.update(verify=args.verify, compare=args.compare)
    if args.market:
        # Awarded by bids: answered whole, never streamed.
        body.update(market=args.market, max_price=args.price_cap, stream=False)
    with ApiClient(args.home, timeout=args.timeout + 10) as api:
        if not body["stream"]:
            answer = api.post("/v1/ask", body)
            if args.json:
                _print_json(answer)
            else:
                _print_output(answer["output"])
                _by(answer)
                if "market" in answer:
                    market = answer["market"]
                    print(f"— awarded by {market['rule']} at {market['price']} credits/1k "
                          f"tokens among {market['bids']} bids", file=sys.stderr)  # fmt: skip
            return 0
        for event in api.stream("/v1/ask", body):
            if args.json:
                print(json.dumps(event, sort_keys=True), flush=True)
            elif event["event"] == "chunk":
                data = event["data"]
                sys.stdout.write(data if isinstance(data, str) else json.dumps(data))
                sys.stdout.flush()
            elif event["event"] == "result":
                print()
                _by(event)
            if event["event"] == "error":
                err = event["error"]
                raise LlamanetError(f"{err['type']}: {err['message']}")
    return 0


SUMMARY_COLUMNS = [
    ("step", "STEP"),
    ("capability", "CAPABILITY"),
    ("peers", "RAN ON"),
    ("elapsed_ms", "MS"),
    ("tokens", "TOKENS"),
    ("credits", "CREDITS"),
]


def cmd_run(args: argparse.Namespace) -> int:
    from llamanet.orchestrator.workflow import load_workflow

    # Checked here first: a broken file is reported with its name, daemon or not.
    load_workflow(args.workflow)
    text = args.workflow.read_text(encoding="utf-8")
    document = json.loads(text) if args.workflow.suffix == ".json" else tomllib.loads(text)
    body = {"workflow": document, "input": _parse_input(args)}
    return _show_run(args, "/v1/run", body)


def cmd_solve(args: argparse.Namespace) -> int:
    return _show_run(args, "/v1/solve", {"goal": args.goal})


def cmd_dashboard(args: argparse.Namespace) -> int:
    from llamanet.api.dashboard import dashboard_link

    link = dashboard_link(args.home)
    if args.json:
        _print_json({"url": link})
    else:
        print(link)
        print("(the link holds the API token: open it in a browser on this machine only)",
              file=sys.stderr)  # fmt: skip
    if args.open:
        import webbrowser

        webbrowser.open(link)
    return 0


def _show_run(args: argparse.Namespace, path: str, body: dict[str, Any]) -> int:
    with ApiClient(args.home, timeout=args.timeout) as api:
        for event in api.stream(path, body):
            if args.json:
                print(json.dumps(event, sort_keys=True), flush=True)
            elif event["event"] == "plan":
                print("plan:", file=sys.stderr)
                for step in event["workflow"].get("steps", []):
                    what = step.get("capability") or step.get("aggregate")
                    print(f"  {step.get('id')}: {what}", file=sys.stderr)
            elif event["event"] == "step":
                _progress(event)
            elif event["event"] == "done":
                _print_output(event["output"])
                print(file=sys.stderr)
                rows = [
                    {**row, "peers": ", ".join(p[:16] + "…" for p in row["peers"])}
                    for row in event["steps"]
                ]
                print(_table(rows, SUMMARY_COLUMNS), file=sys.stderr)
                print(f"— workflow done in {event['elapsed_ms']:.0f} ms", file=sys.stderr)
            if event["event"] == "error":
                err = event["error"]
                problems = "".join(f"\n  - {p}" for p in err.get("problems", ()))
                if problems:
                    raise LlamanetError(f"{err['type']}: workflow cannot run:{problems}")
                raise LlamanetError(f"{err['type']}: {err['message']}")
    return 0


def _progress(event: dict[str, Any]) -> None:
    state = event["state"]
    line = f"  {event['step']:<16} {state:<8}"
    if state == "done":
        peers = ", ".join(p[:16] + "…" for p in event["peers"]) or "here"
        line += f" {event['elapsed_ms']:8.1f} ms  on {peers}"
    elif event["error"]:
        line += f" {event['error']}"
    print(line, file=sys.stderr, flush=True)


def _by(answer: dict[str, Any]) -> None:
    print(
        f"— {answer['capability']} by {answer['peer']} in {answer['elapsed_ms']:.1f} ms",
        file=sys.stderr,
    )


def cmd_mcp(args: argparse.Namespace) -> int:
    from llamanet.api.mcp_server import McpOptions, main

    options = McpOptions(
        transport=args.transport,
        host=args.host,
        port=args.port,
        remote=args.remote,
        refresh_interval=args.refresh,
    )
    # stderr only: in stdio mode stdout is the MCP channel.
    setup_logging(args.log_level)
    main(args.home, options)
    return 0


def node_config_from(args: argparse.Namespace) -> NodeConfig:
    config = load_config(args.home, args.config)
    skills: tuple[str, ...] | None = None
    if args.skills:
        skills = tuple(s.strip() for item in args.skills for s in item.split(",") if s.strip())
    return config.with_overrides(
        listen=tuple(args.listen) if args.listen else None,
        bootstrap=config.bootstrap + tuple(args.bootstrap) if args.bootstrap else None,
        bootstrap_file=args.bootstrap_file,
        mdns=False if args.no_mdns else None,
        mdns_service=args.mdns_service,
        skills=skills,
        backends=tuple(args.backend) if args.backend else None,
        warmup=False if args.no_warmup else None,
        swarm=args.swarm,
        pow_difficulty=args.pow_difficulty,
        api_port=args.api_port,
        api_host=args.api_host,
        api_remote=True if args.api_remote else None,
        log_level=args.log_level,
        log_format=args.log_format,
    )


def cmd_node(args: argparse.Namespace) -> int:
    from llamanet.daemon import run_daemon

    config = node_config_from(args)
    setup_logging(config.log_level, config.log_format)
    trio.run(run_daemon, config)
    return 0


# -- argument parsing ------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home is None:
        args.home = default_home()
    args.home = args.home.expanduser()
    try:
        code = args.func(args)
    except LlamanetError as exc:
        print(f"llamanet: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
