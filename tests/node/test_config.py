"""NodeConfig: defaults, config.toml, validation, overrides, where files are found."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from llamanet.backends.agents import AgentSpec
from llamanet.errors import ConfigError
from llamanet.node import config as config_module
from llamanet.node.config import (
    CONFIG_FILENAME,
    DEFAULT_LISTEN,
    DEFAULT_RECORD_TTL,
    DEFAULT_REFRESH_INTERVAL,
    DEFAULT_SWARM,
    NodeConfig,
    default_home,
    load_config,
)
from llamanet.node.worker import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_TASKS_PER_PEER,
)
from llamanet.protocol.codec import DEFAULT_MAX_FRAME_SIZE
from llamanet.protocol.config import DEFAULT_POW_DIFFICULTY, MAX_POW_DIFFICULTY

FULL_CONFIG = """
listen = ["/ip4/127.0.0.1/tcp/4200", "/ip6/::1/tcp/4200"]
bootstrap = ["/ip4/192.0.2.1/tcp/4101/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"]
bootstrap_file = "~/peers.toml"
mdns = false
mdns_service = "_p2p._udp.local"
liveness_interval = 2.5
liveness_timeout = 1
liveness_max_failures = 4
skills = ["text.echo", "math.eval"]
backends = ["builtin", "ollama:http://127.0.0.1:11500"]
swarm = "lab-2"
pow_difficulty = 12
record_ttl = 600
refresh_interval = 30.5
max_concurrency = 4
max_tasks_per_peer = 2
max_input_bytes = 1000
max_frame_size = 2000
max_depth = 2
max_streams_per_peer = 8
stream_idle_timeout = 5.0
tasks_per_peer_per_s = 20.0
allow_peers = ["12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"]
swarm_admin = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
membership_certificate = "~/lab.cert"
record_fetches_per_peer_per_s = 1.5
dht_streams_per_peer_per_s = 10.0
dht_streams_per_peer = 4
dht_max_peers_per_subnet = 2
spot_check_interval = 600.0
log_format = "json"
api_remote = true
price = 0.5
explore = 0.1
model_refresh_interval = 30.0
warmup = false
perf_check_interval = 2.0
perf_republish_interval = 20.0
session_max = 16
session_max_messages = 10
session_max_bytes = 4096
session_idle_timeout = 60.0
api_host = "127.0.0.2"
api_port = 8088
log_level = "debug"

[[agents]]
capability = "code_generation.python"
model = "qwen2.5-coder:7b"
system = "Answer with Python code only."
"""


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILENAME
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path) -> None:
    config = NodeConfig(home=tmp_path)
    assert config.listen == DEFAULT_LISTEN
    assert config.bootstrap == ()
    assert config.bootstrap_file is None
    assert config.mdns is True
    assert config.skills is None
    assert config.swarm == DEFAULT_SWARM
    assert config.pow_difficulty == DEFAULT_POW_DIFFICULTY
    assert config.record_ttl == DEFAULT_RECORD_TTL
    assert config.refresh_interval == DEFAULT_REFRESH_INTERVAL
    assert config.max_concurrency == DEFAULT_MAX_CONCURRENCY
    assert config.max_tasks_per_peer == DEFAULT_MAX_TASKS_PER_PEER
    assert config.max_input_bytes == DEFAULT_MAX_INPUT_BYTES
    assert config.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert config.max_depth == DEFAULT_MAX_DEPTH
    assert config.api_host == "127.0.0.1"
    assert config.api_port == 0
    assert config.log_level == "info"
    assert config.identity_path == tmp_path / "identity.key"
    assert config.api_file == tmp_path / "api.json"


def test_default_home_honours_llamanet_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMANET_HOME", str(tmp_path / "elsewhere"))
    assert default_home() == tmp_path / "elsewhere"
    assert NodeConfig().home == tmp_path / "elsewhere"


def test_default_home_expands_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LLAMANET_HOME", "~/llama")
    assert default_home() == tmp_path / "llama"


def test_default_home_without_the_variable_is_a_user_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLAMANET_HOME", raising=False)
    home = default_home()
    assert home.is_absolute()
    assert home.name == "llamanet"


# --- load_config --------------------------------------------------------------------


def test_load_config_without_a_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == NodeConfig(home=tmp_path)


def test_load_config_reads_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_config(tmp_path, FULL_CONFIG)
    config = load_config(tmp_path)
    assert config == NodeConfig(
        home=tmp_path,
        listen=("/ip4/127.0.0.1/tcp/4200", "/ip6/::1/tcp/4200"),
        bootstrap=(
            "/ip4/192.0.2.1/tcp/4101/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
        ),
        bootstrap_file=tmp_path / "peers.toml",
        mdns=False,
        mdns_service="_p2p._udp.local.",
        liveness_interval=2.5,
        liveness_timeout=1.0,
        liveness_max_failures=4,
        skills=("text.echo", "math.eval"),
        backends=("builtin", "ollama:http://127.0.0.1:11500"),
        swarm="lab-2",
        pow_difficulty=12,
        record_ttl=600.0,
        refresh_interval=30.5,
        max_concurrency=4,
        max_tasks_per_peer=2,
        max_input_bytes=1000,
        max_frame_size=2000,
        max_depth=2,
        max_streams_per_peer=8,
        stream_idle_timeout=5.0,
        tasks_per_peer_per_s=20.0,
        allow_peers=("12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",),
        swarm_admin="12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
        membership_certificate=tmp_path / "lab.cert",
        record_fetches_per_peer_per_s=1.5,
        dht_streams_per_peer_per_s=10.0,
        dht_streams_per_peer=4,
        dht_max_peers_per_subnet=2,
        spot_check_interval=600.0,
        log_format="json",
        api_remote=True,
        price=0.5,
        explore=0.1,
        model_refresh_interval=30.0,
        warmup=False,
        perf_check_interval=2.0,
        perf_republish_interval=20.0,
        session_max=16,
        session_max_messages=10,
        session_max_bytes=4096,
        session_idle_timeout=60.0,
        api_host="127.0.0.2",
        api_port=8088,
        log_level="debug",
        agents=(
            AgentSpec(
                capability="code_generation.python",
                model="qwen2.5-coder:7b",
                system="Answer with Python code only.",
            ),
        ),
    )
    assert isinstance(config.record_ttl, float)
    # Every setting but home can be given in the file, and this test gives them all.
    given = set(tomllib.loads(FULL_CONFIG))
    assert given == {f.name for f in fields(NodeConfig)} - {"home"}


def test_load_config_reads_an_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text('swarm = "lab"\n', encoding="utf-8")
    write_config(tmp_path, 'swarm = "ignored"\n')
    assert load_config(tmp_path, path).swarm == "lab"


def test_an_explicit_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: no such config file")):
        load_config(tmp_path, path)


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "swarm = lab\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r": .*line 1"):
        load_config(tmp_path)


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, "max_concurency = 8\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'max_concurency' \(known: ") as exc:
        load_config(tmp_path)
    assert "max_concurrency" in str(exc.value)


def test_home_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'home = "/elsewhere"\n')
    with pytest.raises(ConfigError, match="unknown setting 'home'"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('swarm = "Main Net"', "invalid swarm name 'Main Net'"),
        ('skills = ["Text.Echo"]', "invalid capability name 'Text.Echo'"),
        ("listen = []", "at least one listen address is required"),
        (
            f"pow_difficulty = {MAX_POW_DIFFICULTY + 1}",
            f"pow_difficulty must be in 0..{MAX_POW_DIFFICULTY}",
        ),
        ("pow_difficulty = -1", "pow_difficulty must be in 0..40"),
        ("record_ttl = 59", "record_ttl must be between 60 s and 24 h"),
        ("record_ttl = 86401", "record_ttl must be between 60 s and 24 h"),
        ("max_concurrency = 0", "max_concurrency must be positive"),
        ("max_tasks_per_peer = -1", "max_tasks_per_peer must be positive"),
        ("max_streams_per_peer = 0", "max_streams_per_peer must be positive"),
        ("refresh_interval = 0.0", "refresh_interval must be positive"),
        ("stream_idle_timeout = nan", "stream_idle_timeout must be positive"),
        ("max_depth = -1", "max_depth must be >= 0"),
        ("dht_streams_per_peer = 0", "dht_streams_per_peer must be positive"),
        ("record_fetches_per_peer_per_s = 0.0", "record_fetches_per_peer_per_s must be positive"),
        ("dht_max_peers_per_subnet = -1", "dht_max_peers_per_subnet must be >= 0"),
        ("spot_check_interval = -5.0", "spot_check_interval must be >= 0"),
        ('swarm_admin = "boss"', "swarm_admin: 'boss' is not a peer ID"),
        (
            "max_input_bytes = 2048\nmax_frame_size = 1024",
            "max_input_bytes cannot exceed max_frame_size",
        ),
        ('log_level = "loud"', "log_level must be one of debug, info, warning, error"),
        ("api_port = 65536", "api_port must be a TCP port number"),
        ('api_host = "0.0.0.0"', "api_host '0.0.0.0' is not a loopback address: set api_remote"),
    ],
)
def test_invalid_values_are_config_errors_naming_the_file(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_config(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_config(tmp_path)
    assert str(exc.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('max_concurrency = "8"', "max_concurrency must be an integer, not '8'"),
        ("max_concurrency = 8.0", "max_concurrency must be an integer"),
        ("pow_difficulty = true", "pow_difficulty must be an integer, not True"),
        ("api_port = 80.5", "api_port must be an integer"),
        ('mdns = "yes"', "mdns must be true or false, not 'yes'"),
        ("mdns = 1", "mdns must be true or false"),
        ('record_ttl = "1h"', "record_ttl must be a number"),
        ("record_ttl = false", "record_ttl must be a number"),
        ("swarm = 5", "swarm must be a string, not 5"),
        ("api_host = 127", "api_host must be a string"),
        ("log_level = 1", "log_level must be a string"),
        ("bootstrap_file = 5", "bootstrap_file must be a path (a string), not 5"),
        ('listen = "/ip4/127.0.0.1/tcp/0"', "listen must be a list of strings"),
        ("bootstrap = [1]", "bootstrap must be a list of strings"),
        ('skills = "text.echo"', "skills must be a list of strings"),
    ],
)
def test_values_of_the_wrong_type_are_config_errors(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_config(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_config(tmp_path)


def test_an_integer_is_accepted_where_a_number_is_expected(tmp_path: Path) -> None:
    write_config(tmp_path, "refresh_interval = 10\n")
    config = load_config(tmp_path)
    assert config.refresh_interval == 10.0
    assert isinstance(config.refresh_interval, float)


# --- overrides and the bootstrap file ----------------------------------------------


def test_with_overrides_ignores_none(tmp_path: Path) -> None:
    base = NodeConfig(home=tmp_path, swarm="lab")
    changed = base.with_overrides(swarm=None, api_port=9000, skills=None, mdns=False)
    assert changed == NodeConfig(home=tmp_path, swarm="lab", api_port=9000, mdns=False)
    assert base.api_port == 0  # the original is untouched


def test_with_overrides_validates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid swarm name"):
        NodeConfig(home=tmp_path).with_overrides(swarm="Not Valid")


def test_an_explicit_bootstrap_file_wins(tmp_path: Path) -> None:
    (tmp_path / "bootstrap_peers.toml").write_text("", encoding="utf-8")
    chosen = tmp_path / "chosen.toml"
    config = NodeConfig(home=tmp_path, bootstrap_file=chosen)
    assert config.resolved_bootstrap_file() == chosen  # even though it does not exist


def test_the_home_bootstrap_file_comes_next(tmp_path: Path) -> None:
    own = tmp_path / "bootstrap_peers.toml"
    own.write_text("", encoding="utf-8")
    assert NodeConfig(home=tmp_path).resolved_bootstrap_file() == own


def test_the_shipped_bootstrap_file_comes_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "shipped.toml"
    monkeypatch.setattr(config_module, "REPO_BOOTSTRAP_FILE", shipped)
    home = tmp_path / "home"
    assert NodeConfig(home=home).resolved_bootstrap_file() is None
    shipped.write_text("", encoding="utf-8")
    assert NodeConfig(home=home).resolved_bootstrap_file() == shipped


def test_the_api_leaves_loopback_only_when_asked(tmp_path: Path) -> None:
    assert NodeConfig(home=tmp_path, api_host="::1").api_host == "::1"
    assert NodeConfig(home=tmp_path, api_host="localhost").api_host == "localhost"
    with pytest.raises(ConfigError, match="api_remote"):
        NodeConfig(home=tmp_path, api_host="192.168.1.5")
    assert NodeConfig(home=tmp_path, api_host="0.0.0.0", api_remote=True).api_remote
