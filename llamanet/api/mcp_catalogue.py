"""The MCP tools a swarm offers, without I/O: a tool per capability the swarm
serves (named, described and given an input schema), the general tools (ask,
find, solve, status), and how tool arguments become a llamanet task and an answer
becomes a tool result.  ``api/mcp_server.py`` serves them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import mcp.types as mt

from llamanet.backends.builtin import BUILTIN_SKILLS
from llamanet.errors import RemoteError
from llamanet.protocol.capabilities import capability_matches, is_valid_capability

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# Many clients (and the model APIs behind them) accept only [A-Za-z0-9_-]{1,64}.
MAX_TOOL_NAME: Final = 64
# Past this, clients drown in tools; every capability stays reachable through `ask`.
MAX_CAPABILITY_TOOLS: Final = 128
GENERAL_TOOLS: Final = ("ask", "find", "solve", "status")

ASK_TIMEOUT: Final = 30.0
SOLVE_TIMEOUT: Final = 600.0


# -- the tool catalogue (pure) ------------------------------------------------------------


def tool_name(capability: str) -> str:
    """The MCP tool name for ``capability``: dots become dashes (capability names
    hold no dashes, so names never collide); a name over 64 characters is cut
    and made unique with a hash of the capability."""
    name = capability.replace(".", "-")
    if len(name) <= MAX_TOOL_NAME:
        return name
    digest = hashlib.sha256(capability.encode()).hexdigest()[:8]
    return f"{name[: MAX_TOOL_NAME - 9]}-{digest}"


def capability_of(name: str) -> str | None:
    """The capability a tool name stands for, when the name is not cut."""
    capability = name.replace("-", ".")
    return capability if is_valid_capability(capability) else None


@dataclass(frozen=True)
class Offer:
    """A capability as the swarm offers it: by which peers, with which models."""

    capability: str
    peers: tuple[str, ...]
    models: tuple[str, ...]

    @property
    def tool_name(self) -> str:
        return tool_name(self.capability)


def offers_from(peers: Any, *, own_peer_id: str) -> dict[str, Offer]:
    """Tool name -> offer, from the node's ``/v1/peers`` rows.

    The node itself is left out: it sends tasks only to peers.  Capabilities
    offered by more peers come first when there are too many to list, and one
    whose tool name is a general tool's stays reachable through ``ask``.
    """
    found: dict[str, tuple[list[str], set[str]]] = {}
    for row in peers if isinstance(peers, list) else []:
        peer = row.get("peer_id") if isinstance(row, dict) else None
        if not isinstance(peer, str) or peer == own_peer_id:
            continue
        models = [m for m in row.get("models") or [] if isinstance(m, str)]
        for cap in row.get("capabilities") or []:
            if is_valid_capability(cap):
                holders, names = found.setdefault(cap, ([], set()))
                holders.append(peer)
                names.update(models)
    ranked = sorted(found.items(), key=lambda item: (-len(item[1][0]), item[0]))
    offers: dict[str, Offer] = {}
    for cap, (holders, names) in ranked:
        offer = Offer(cap, tuple(sorted(holders)), tuple(sorted(names)))
        if offer.tool_name in GENERAL_TOOLS or offer.tool_name in offers:
            continue
        offers[offer.tool_name] = offer
        if len(offers) == MAX_CAPABILITY_TOOLS:
            break
    return offers


def _short(peer: str) -> str:
    return peer[:16] + "…"


_INPUT_HINTS: Final = {
    "llm.chat": 'Input: text (one user message) or {"messages": [{"role", "content"}, ...]}.',
    "llm.generate": 'Input: the prompt as text, or {"prompt": ...}.',
    "llm.embed": 'Input: a text, or {"texts": [...]}; the output is the vectors.',
}


def describe(offer: Offer) -> str:
    """What an MCP client (and the model choosing tools) reads about ``offer``."""
    what = f" ({BUILTIN_SKILLS[offer.capability]})" if offer.capability in BUILTIN_SKILLS else ""
    count = len(offer.peers)
    shown = ", ".join(_short(p) for p in offer.peers[:3]) + (", …" if count > 3 else "")
    text = (
        f"Run the llamanet capability '{offer.capability}'{what} on a peer of the swarm. "
        f"Offered by {count} verified peer{'s' if count != 1 else ''}: {shown}."
    )
    if offer.models:
        more = ", …" if len(offer.models) > 5 else ""
        text += f" Models: {', '.join(offer.models[:5])}{more}."
    for family, hint in _INPUT_HINTS.items():
        if capability_matches(family, offer.capability):
            text += " " + hint
    return text


_TASK_PROPERTIES: Final[dict[str, Any]] = {
    "input": {
        "type": ["string", "object"],
        "description": "the task's input: text, or a JSON object for structured capabilities",
    },
    "params": {
        "type": "object",
        "description": 'options for the backend, e.g. {"temperature": 0.2, "max_tokens": 256}',
    },
    "verify": {
        "type": "integer",
        "minimum": 1,
        "maximum": 9,
        "description": "run on this many distinct peers and return the answer most agree on",
    },
    "compare": {
        "type": "string",
        "description": "how verified answers are compared: exact (default), text, "
        "or the name of a judge capability",
    },
    "timeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 3600,
        "description": f"seconds (default {ASK_TIMEOUT:g})",
    },
    "peer": {"type": "string", "description": "send the task to this peer ID only"},
}
_CAPABILITY_PROPERTY: Final = {
    "type": "string",
    "description": "capability name: lowercase dotted segments, e.g. math.eval or llm.chat",
}

CAPABILITY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": _TASK_PROPERTIES,
    "required": ["input"],
    "additionalProperties": False,
}
GENERAL_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "ask": {
        "type": "object",
        "properties": {"capability": _CAPABILITY_PROPERTY, **_TASK_PROPERTIES},
        "required": ["capability", "input"],
        "additionalProperties": False,
    },
    "find": {
        "type": "object",
        "properties": {
            "capability": _CAPABILITY_PROPERTY,
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        },
        "required": ["capability"],
        "additionalProperties": False,
    },
    "solve": {
        "type": "object",
        "properties": {
            "goal": {"type": "string", "description": "what you want done, in words"},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 3600,
                "description": f"seconds (default {SOLVE_TIMEOUT:g})",
            },
        },
        "required": ["goal"],
        "additionalProperties": False,
    },
    "status": {"type": "object", "properties": {}, "additionalProperties": False},
}
_GENERAL_DESCRIPTIONS: Final = {
    "ask": "Run any capability of the llamanet swarm by name (see `find`), on the best "
    "verified peer that offers it, failing over to the next.",
    "find": "List the verified peers of the llamanet swarm that offer a capability (or any "
    "capability under a prefix such as 'llm'), with their models, load and price.",
    "solve": "Hand a goal to the llamanet swarm: a planner peer breaks it into a workflow of "
    "capabilities, the node runs it on peers, and the final answer comes back.",
    "status": "The local llamanet node's status: its peer ID, swarm, peers, capabilities "
    "and task counts.",
}


# Hints for clients that ask before running tools: tasks run on other machines
# (open world) but change nothing of the caller's.
_READING: Final = mt.ToolAnnotations(read_only_hint=True, open_world_hint=True)
_ACTING: Final = mt.ToolAnnotations(
    read_only_hint=False, destructive_hint=False, open_world_hint=True
)


def general_tools() -> list[mt.Tool]:
    return [
        mt.Tool(
            name=name,
            description=_GENERAL_DESCRIPTIONS[name],
            input_schema=GENERAL_SCHEMAS[name],
            annotations=_READING if name in ("find", "status") else _ACTING,
        )
        for name in GENERAL_TOOLS
    ]


def capability_tool(offer: Offer) -> mt.Tool:
    return mt.Tool(
        name=offer.tool_name,
        title=offer.capability,
        description=describe(offer),
        input_schema=CAPABILITY_SCHEMA,
        annotations=_ACTING,
    )


class _ArgumentError(Exception):
    """A tool was called with arguments it cannot use; the message says which."""


def shape_input(capability: str, value: Any) -> Any:
    """Plain text for the model capabilities means what anyone would expect."""
    if not isinstance(value, str):
        return value
    if capability_matches("llm.chat", capability):
        return {"messages": [{"role": "user", "content": value}]}
    if capability_matches("llm.generate", capability):
        return {"prompt": value}
    if capability_matches("llm.embed", capability):
        return {"texts": [value]}
    return value


def _check_arguments(args: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    known = schema["properties"]
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise _ArgumentError(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"this tool takes {', '.join(known) or 'none'}"
        )
    for name in schema.get("required", ()):
        if args.get(name) is None:
            raise _ArgumentError(f"'{name}' is required")


def _seconds(value: Any, default: float) -> float:
    """The deadline we wait by; the node itself rejects a bad value with a message."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 3600:
        return float(value)
    return default


def ask_options(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/v1/ask`` options in a capability tool's (or ``ask``'s) arguments."""
    return {
        key: args[key]
        for key in ("params", "verify", "compare", "timeout", "peer")
        if args.get(key) is not None
    }


def as_text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def _failure(message: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(text=message)], is_error=True)


def _explain(exc: Exception) -> str:
    problems = exc.problems if isinstance(exc, RemoteError) else []
    return str(exc) + "".join(f"\n  - {p}" for p in problems)


def _success(text: str, structured: dict[str, Any]) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(text=text)], structured_content=structured)


def answer_result(answer: Mapping[str, Any]) -> mt.CallToolResult:
    structured = {
        key: answer.get(key)
        for key in ("output", "capability", "peer", "elapsed_ms", "model_digest", "usage")
    }
    verified_by = [v.get("peer") for v in answer.get("verified_by") or []]
    if verified_by:
        structured["verified_by"] = verified_by
    return _success(as_text(answer.get("output")), structured)
