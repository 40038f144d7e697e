"""The sub-commands: each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from collections.abc import Sequence
from typing import Any

import trio

from llamanet.api.client import ApiClient
from llamanet.errors import ConfigError, LlamanetError
from llamanet.logs import setup_logging
from llamanet.node.config import NodeConfig, load_config
from llamanet.protocol.capabilities import validate_swarm_name
from llamanet.protocol.membership import issue_certificate
from llamanet.protocol.peer_ids import peer_id_from_text
from llamanet.trust.keys import load_or_create_identity

from .output import cell, print_json, print_output, table

log = logging.getLogger("llamanet")


def cmd_id(args: argparse.Namespace) -> int:
    identity = load_or_create_identity(args.home)
    if args.json:
        print_json({"peer_id": identity.peer_id_text})
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
        print_json(summary)
    else:
        print(f"wrote {args.out} for {args.peer} (swarm {args.swarm!r}, {args.days:g} days)")
        print("the member puts it in its home as membership.cert; every member's config.toml has")
        print(f'  swarm = "{args.swarm}"\n  swarm_admin = "{admin.peer_id_text}"')
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with ApiClient(args.home) as api:
        status = api.get("/v1/status")
    if args.json:
        print_json(status)
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
        print(f"{key.ljust(width)}  {cell(value)}")
    for addr in status.get("addrs", []):
        print(f"{'addr'.ljust(width)}  {addr}")
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    with ApiClient(args.home) as api:
        peers = api.get("/v1/peers")
    if args.json:
        print_json(peers)
        return 0
    print(
        table(
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
        print_json(found)
        return 0
    for row in found:
        row["models"] = [m["name"] for m in row.get("models", [])]
    print(
        table(
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
                print_json(answer)
            else:
                print_output(answer["output"])
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
        print_json({"url": link})
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
                print_output(event["output"])
                print(file=sys.stderr)
                rows = [
                    {**row, "peers": ", ".join(p[:16] + "…" for p in row["peers"])}
                    for row in event["steps"]
                ]
                print(table(rows, SUMMARY_COLUMNS), file=sys.stderr)
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
