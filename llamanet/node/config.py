"""Node configuration: one frozen dataclass, from defaults, ``config.toml`` and flags.

Precedence, lowest first: the defaults below, ``$LLAMANET_HOME/config.toml`` (or
the file given with ``--config``), then command-line flags.  Unknown keys are an
error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, get_args, get_origin, get_type_hints

import platformdirs

from llamanet.backends.agents import AgentSpec, parse_agents
from llamanet.backends.selection import check_backend_spec
from llamanet.discovery.liveness import DEFAULT_INTERVAL, DEFAULT_MAX_FAILURES, DEFAULT_TIMEOUT
from llamanet.discovery.mdns_records import DEFAULT_SERVICE, normalize_service
from llamanet.errors import ConfigError, LlamanetError, LocalProtocolError
from llamanet.protocol.capabilities import validate_capability, validate_swarm_name
from llamanet.protocol.codec import DEFAULT_MAX_FRAME_SIZE
from llamanet.protocol.config import DEFAULT_POW_DIFFICULTY, MAX_POW_DIFFICULTY
from llamanet.protocol.peer_ids import peer_id_from_text

from .worker import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_TASKS_PER_PEER,
    DEFAULT_TASK_RATE,
)

DEFAULT_LISTEN: Final = ("/ip4/0.0.0.0/tcp/4101",)
DEFAULT_SWARM: Final = "main"
DEFAULT_RECORD_TTL: Final = 3600.0
DEFAULT_REFRESH_INTERVAL: Final = 300.0
DEFAULT_API_HOST: Final = "127.0.0.1"
CONFIG_FILENAME: Final = "config.toml"
REPO_BOOTSTRAP_FILE: Final = Path(__file__).resolve().parents[2] / "bootstrap_peers.toml"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def default_home() -> Path:
    """``$LLAMANET_HOME``, else the platform's user data directory for llamanet."""
    env = os.environ.get("LLAMANET_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("llamanet", appauthor=False))


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) can only be reached from
    this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeConfig:
    home: Path = field(default_factory=default_home)
    """Identity, config, api.json and state live here."""
    listen: tuple[str, ...] = DEFAULT_LISTEN
    """Multiaddrs to listen on; ``/tcp/0`` picks a free port."""
    bootstrap: tuple[str, ...] = ()
    """Extra bootstrap peers (multiaddrs with ``/p2p/<id>``), on top of the file."""
    bootstrap_file: Path | None = None
    """Defaults to ``$home/bootstrap_peers.toml`` if present, else the shipped file."""
    mdns: bool = True
    """Find peers on the LAN by mDNS (tests turn it off outside network namespaces)."""
    mdns_service: str = DEFAULT_SERVICE
    """mDNS service name: ``_llamanet._udp.local`` keeps other libp2p apps out of the
    swarm; ``_p2p._udp.local`` (the libp2p spec's) lets generic libp2p tools see us."""
    liveness_interval: float = DEFAULT_INTERVAL
    """Seconds between pings of peers met on the LAN or connected directly."""
    liveness_timeout: float = DEFAULT_TIMEOUT
    """Seconds a liveness ping may take."""
    liveness_max_failures: int = DEFAULT_MAX_FAILURES
    """Failed pings in a row after which a peer is dropped."""
    skills: tuple[str, ...] | None = None
    """Built-in skills to serve; ``None`` serves all of them."""
    backends: tuple[str, ...] = ("auto",)
    """Backends to run: ``auto``, ``builtin``, ``ollama[:URL]``, ``openai:URL``,
    ``gguf:PATH`` (see backends/selection.py)."""
    agents: tuple[AgentSpec, ...] = ()
    """Capabilities served by a given model with a system prompt (``[[agents]]``)."""
    swarm: str = DEFAULT_SWARM
    """Swarm name: part of every provider key, so swarms do not see each other."""
    pow_difficulty: int = DEFAULT_POW_DIFFICULTY
    """Proof-of-work bits required of identities in this swarm."""
    record_ttl: float = DEFAULT_RECORD_TTL
    """Lifetime of our signed record; republished at half-life."""
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    """How often the routing table is refreshed (and bootstrap retried if empty)."""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_tasks_per_peer: int = DEFAULT_MAX_TASKS_PER_PEER
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH
    tasks_per_peer_per_s: float = DEFAULT_TASK_RATE
    """Task offers one requester may make per second (burst: twice that)."""
    max_streams_per_peer: int = 64
    """Open inbound task streams one peer may hold; more are reset at once."""
    record_fetches_per_peer_per_s: float = 2.0
    """Requests for our record one peer may make per second (burst: ten times
    that); beyond it, ``overloaded``."""
    dht_streams_per_peer_per_s: float = 20.0
    """DHT streams (each one or more requests, puts included) one peer may open per
    second (burst: five times that); beyond it they are reset unread."""
    dht_streams_per_peer: int = 12
    """DHT streams one peer may have open with us at once (of 64 in all)."""
    dht_max_peers_per_subnet: int = 3
    """Routing-table entries sharing one public /24 (IPv4) or /48 (IPv6); private
    and loopback addresses are exempt.  0 turns the cap off."""
    spot_check_interval: float = 1800.0
    """Seconds between spot checks of a model digest that at least three peers
    claim (a seeded canary prompt; see orchestrator/attestation.py); 0: never."""
    stream_idle_timeout: float = 60.0
    """Inbound task streams with no task for this long are closed."""
    allow_peers: tuple[str, ...] = ()
    """A private swarm: only these peer IDs may connect (empty: anyone)."""
    swarm_admin: str = ""
    """A private swarm run by an admin: the admin's peer ID.  Peers showing a
    membership certificate it signed for this swarm get in (as do ``allow_peers``)."""
    membership_certificate: Path | None = None
    """This node's certificate (``llamanet certify`` writes one); defaults to
    ``$home/membership.cert``."""
    price: float = 0.0
    """Credits per 1k tokens this node asks (advertised, and bid in market mode)."""
    explore: float = 0.05
    """Chance that a task goes to a capable peer this node has never used, so new
    peers get tried (0 turns it off)."""
    model_refresh_interval: float = 60.0
    """How often model servers are asked again which models they serve."""
    warmup: bool = True
    """Measure each model with a short generation at start (it is loaded then, too)."""
    perf_check_interval: float = 10.0
    """How often measured speed and load are compared with the published record."""
    perf_republish_interval: float = 60.0
    """Least time between two republishes caused by drifting speed or load."""
    session_max: int = 256
    """Chat sessions whose history this worker keeps (least recently used go first)."""
    session_max_messages: int = 64
    session_max_bytes: int = 256 * 1024
    session_idle_timeout: float = 1800.0
    """Seconds a session's history is kept after its last turn."""
    api_host: str = DEFAULT_API_HOST
    api_remote: bool = False
    """Allow ``api_host`` to be other than a loopback address (the API then answers
    the network; every request still needs the token)."""
    api_port: int = 0
    log_level: str = "info"
    log_format: str = "text"
    """``text`` or ``json`` (one object per line)."""

    def __post_init__(self) -> None:
        # Library users pass plain strings for paths; keep the dataclass frozen.
        object.__setattr__(self, "home", Path(self.home).expanduser())
        for name in ("bootstrap_file", "membership_certificate"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser())
        try:
            validate_swarm_name(self.swarm)
            for skill in self.skills or ():
                validate_capability(skill)
        except LocalProtocolError as exc:
            raise ConfigError(str(exc)) from exc
        try:
            object.__setattr__(self, "mdns_service", normalize_service(self.mdns_service))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.liveness_max_failures < 1:
            raise ConfigError("liveness_max_failures must be at least 1")
        if not self.backends:
            raise ConfigError("at least one backend is required (e.g. auto or builtin)")
        for spec in self.backends:
            check_backend_spec(spec)
        if not self.listen:
            raise ConfigError("at least one listen address is required")
        if not 0 <= self.pow_difficulty <= MAX_POW_DIFFICULTY:
            raise ConfigError(f"pow_difficulty must be in 0..{MAX_POW_DIFFICULTY}")
        if not 60 <= self.record_ttl <= 86400:
            raise ConfigError("record_ttl must be between 60 s and 24 h")
        positive = (
            "max_concurrency",
            "max_tasks_per_peer",
            "max_input_bytes",
            "max_frame_size",
            "max_streams_per_peer",
            "tasks_per_peer_per_s",
            "record_fetches_per_peer_per_s",
            "dht_streams_per_peer_per_s",
            "dht_streams_per_peer",
            "refresh_interval",
            "stream_idle_timeout",
            "liveness_interval",
            "liveness_timeout",
            "model_refresh_interval",
            "perf_check_interval",
            "perf_republish_interval",
            "session_max",
            "session_max_messages",
            "session_max_bytes",
            "session_idle_timeout",
        )
        for name in positive:
            if not getattr(self, name) > 0:  # "not >" also refuses NaN
                raise ConfigError(f"{name} must be positive")
        for peer in self.allow_peers:
            try:
                peer_id_from_text(peer)
            except LlamanetError as exc:
                raise ConfigError(f"allow_peers: {peer!r} is not a peer ID") from exc
        if self.swarm_admin:
            try:
                peer_id_from_text(self.swarm_admin)
            except LlamanetError as exc:
                raise ConfigError(f"swarm_admin: {self.swarm_admin!r} is not a peer ID") from exc
        if not self.price >= 0:
            raise ConfigError("price must be >= 0")
        if self.dht_max_peers_per_subnet < 0:
            raise ConfigError("dht_max_peers_per_subnet must be >= 0")
        if not self.spot_check_interval >= 0:
            raise ConfigError("spot_check_interval must be >= 0 (0: no spot checks)")
        if not 0 <= self.explore <= 1:
            raise ConfigError("explore must be between 0 and 1")
        if self.max_depth < 0:
            raise ConfigError("max_depth must be >= 0")
        if self.max_input_bytes > self.max_frame_size:
            raise ConfigError("max_input_bytes cannot exceed max_frame_size")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not self.api_remote and not is_loopback_host(self.api_host):
            raise ConfigError(
                f"api_host {self.api_host!r} is not a loopback address: set api_remote = true "
                "(llamanet node --api-remote) to serve the API on the network; every request "
                "still needs the token"
            )
        if not 0 <= self.api_port <= 65535:
            raise ConfigError("api_port must be a TCP port number")

    @property
    def identity_path(self) -> Path:
        return self.home / "identity.key"

    @property
    def certificate_path(self) -> Path:
        return self.membership_certificate or self.home / "membership.cert"

    @property
    def api_file(self) -> Path:
        return self.home / "api.json"

    def resolved_bootstrap_file(self) -> Path | None:
        if self.bootstrap_file is not None:
            return self.bootstrap_file
        own = self.home / "bootstrap_peers.toml"
        if own.exists():
            return own
        return REPO_BOOTSTRAP_FILE if REPO_BOOTSTRAP_FILE.exists() else None

    def with_overrides(self, **overrides: Any) -> NodeConfig:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_FILE_KEYS: Final = {f.name for f in fields(NodeConfig)} - {"home"}


def _field_kind(hint: Any) -> type:
    """``bool``/``int``/``float``/``str``/``Path``/``tuple`` for a field's type
    (``X | None`` counts as ``X``: TOML has no null)."""
    if get_origin(hint) is types.UnionType:
        (hint,) = (a for a in get_args(hint) if a is not type(None))
    kind = get_origin(hint) or hint
    if kind not in (bool, int, float, str, Path, tuple):
        raise TypeError(f"no TOML reading for a NodeConfig field of type {hint!r}")
    return kind  # type: ignore[no-any-return]


_FILE_KINDS: Final = {
    name: _field_kind(hint)
    for name, hint in get_type_hints(NodeConfig).items()
    if name not in ("home", "agents")
}
_KIND_NAMES: Final = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path (a string)",
    tuple: "a list of strings",
}


def _from_file(path: Path, key: str, value: Any) -> Any:
    """``value`` read from TOML as ``key``'s field type, or :class:`ConfigError`."""
    kind = _FILE_KINDS[key]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:  # str, Path
        ok = isinstance(value, str)
        value = Path(value).expanduser() if ok and kind is Path else value
    if not ok:
        raise ConfigError(f"{path}: {key} must be {_KIND_NAMES[kind]}, not {value!r}")
    return value


def load_config(home: Path, config_file: Path | None = None) -> NodeConfig:
    """Defaults overlaid with ``config_file`` (or ``home/config.toml`` if it exists)."""
    path = config_file or home / CONFIG_FILENAME
    base = NodeConfig(home=home)
    if config_file is None and not path.exists():
        return base
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {sorted(unknown)[0]!r} "
            f"(known: {', '.join(sorted(_FILE_KEYS))})"
        )
    values: dict[str, Any] = {
        key: parse_agents(path, value) if key == "agents" else _from_file(path, key, value)
        for key, value in data.items()
    }
    try:
        return replace(base, **values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
