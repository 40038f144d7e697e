"""The local control API, served for real nodes on loopback and called with httpx."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from llamanet.api.server import serve_api
from llamanet.node.node import Node
from llamanet.protocol.peer_ids import peer_id_from_public_key
from llamanet.protocol.records import RECORD_DOMAIN, RECORD_PAYLOAD_TYPE, open_envelope

from ..doubles import SlowSkillDouble
from ..nodes import eventually, start_node, start_swarm


def routes(dial_addr: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route, with a request that would succeed given the token."""
    return [
        ("GET", "/v1/status", None),
        ("GET", "/v1/peers", None),
        ("GET", "/v1/record", None),
        ("GET", "/v1/find?cap=text.echo", None),
        ("POST", "/v1/ask", {"cap": "text.echo", "input": "hi", "timeout": 2}),
        ("POST", "/v1/connect", {"addr": dial_addr}),
        ("POST", "/v1/run", {"workflow": {"steps": [{"id": "a", "capability": "text.echo"}]}}),
        ("GET", "/v1/models", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/tasks", None),
        ("GET", "/dashboard", None),
        ("GET", "/dashboard/dashboard.js", None),
        ("GET", "/dashboard/dashboard.css", None),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/v1/completions", {"prompt": "hi"}),
        ("POST", "/v1/embeddings", {"input": "hi"}),
        ("GET", "/.well-known/agent-card.json", None),
        (
            "POST",
            "/a2a",
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {
                    "message": {
                        "messageId": "m1",
                        "role": "ROLE_USER",
                        "parts": [{"text": "hi"}],
                        "metadata": {"llamanet": {"capability": "text.echo", "timeout": 2}},
                    }
                },
            },
        ),
    ]


@dataclass(frozen=True)
class Api:
    url: str
    token: str
    client: httpx.AsyncClient
    """Sends the token on every request."""


@asynccontextmanager
async def serving(node: Node) -> AsyncIterator[Api]:
    """``node``'s API, served until the block ends."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, node)
        token = json.loads(node.config.api_file.read_text())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            yield Api(url, token, client)
        nursery.cancel_scope.cancel()


# --- authentication ------------------------------------------------------------------


async def test_every_route_refuses_a_missing_or_wrong_token(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "other") as other,
        start_node(tmp_path / "n0") as node,
        serving(node) as api,
    ):
        wrong = {"Authorization": f"Bearer {api.token[:-1]}x"}
        not_bearer = {"Authorization": api.token}
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as anonymous:
            for method, path, body in routes(other.addrs()[0]):
                for headers in ({}, wrong, not_bearer):
                    response = await anonymous.request(method, path, json=body, headers=headers)
                    assert response.status_code == 401, (method, path, headers)
                    assert response.headers["www-authenticate"] == "Bearer"
                    assert response.json()["error"]["type"] == "Unauthorized"
        # Nothing was asked or dialled on behalf of the refused requests.
        assert node.tasks_sent == {}
        assert node.status().connected_peers == 0


async def test_no_cors_headers_are_sent(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node, serving(node) as api:
        origin = {"Origin": "https://evil.example"}
        responses = [
            await api.client.get("/v1/status", headers=origin),
            await api.client.get("/v1/status", headers={**origin, "Authorization": ""}),
            await api.client.options(
                "/v1/ask",
                headers={**origin, "Access-Control-Request-Method": "POST"},
            ),
        ]
        assert responses[0].status_code == 200
        for response in responses:
            assert not any(h.startswith("access-control-") for h in response.headers)


# --- api.json --------------------------------------------------------------------------


async def test_api_json_is_private_and_removed_on_exit(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node:
        api_file = node.config.api_file
        async with serving(node) as api:
            assert stat.S_IMODE(api_file.stat().st_mode) == 0o600
            info = json.loads(api_file.read_text())
            assert info == {
                "url": api.url,
                "token": api.token,
                "pid": os.getpid(),
                "peer_id": node.peer_id_text,
            }
            assert len(api.token) >= 32
            assert api.url.startswith("http://127.0.0.1:")
            assert node.api_url == api.url
        assert not api_file.exists()


async def test_api_json_of_another_process_is_left_alone(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node:
        api_file = node.config.api_file
        async with serving(node):
            # Another daemon for the same home took over the file.
            api_file.write_text(json.dumps({"url": "x", "token": "y", "pid": os.getpid() + 1}))
        assert api_file.exists()


# --- status, record, peers, find -------------------------------------------------------


async def test_status(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0", skills=("math.eval",)) as node, serving(node) as api:
        response = await api.client.get("/v1/status")
        assert response.status_code == 200
        status = response.json()
        assert status["peer_id"] == node.peer_id_text
        assert status["swarm"] == "main"
        assert status["capabilities"] == ["math.eval"]
        assert status["addrs"] == node.addrs()
        assert status["record_seq"] == node.record.seq
        assert 0 < status["record_expires_in"] <= node.config.record_ttl
        assert status["tasks_running"] == 0
        assert status["api"] == api.url
        assert {"version", "dht_peers", "known_records", "uptime_s"} <= set(status)


async def test_record_is_the_nodes_signed_record(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node, serving(node) as api:
        response = await api.client.get("/v1/record")
        assert response.status_code == 200
        body = response.json()
        assert body["record"]["peer"] == node.peer_id_text
        assert body["record"]["seq"] == node.record.seq
        envelope = base64.b64decode(body["envelope"])
        assert envelope == node.record.envelope
        public_key, _ = open_envelope(envelope, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE)
        assert peer_id_from_public_key(public_key) == node.peer_id


async def test_find_validates_its_query(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node, serving(node) as api:
        missing = await api.client.get("/v1/find")
        assert missing.status_code == 400
        assert missing.json()["error"]["message"] == "query parameter 'cap' is required"

        bad_name = await api.client.get("/v1/find", params={"cap": "Not A Capability"})
        assert bad_name.status_code == 400
        assert bad_name.json()["error"]["type"] == "LocalProtocolError"
        assert "invalid capability name" in bad_name.json()["error"]["message"]

        bad_limit = await api.client.get("/v1/find", params={"cap": "text", "limit": "many"})
        assert bad_limit.status_code == 400

        bad_timeout = await api.client.get("/v1/find", params={"cap": "text", "timeout": "0"})
        assert bad_timeout.status_code == 400


# --- ask (two nodes) ------------------------------------------------------------------------


@asynccontextmanager
async def asker_of_two(tmp_path: Path) -> AsyncIterator[tuple[list[Node], Api]]:
    """Two nodes; the API of node 1, which bootstrapped from node 0."""
    async with start_swarm(tmp_path, 2) as nodes, serving(nodes[1]) as api:
        yield nodes, api


async def test_ask_runs_the_task_on_the_other_node_and_finds_it(tmp_path: Path) -> None:
    async with asker_of_two(tmp_path) as (nodes, api):
        response = await api.client.post(
            "/v1/ask", json={"cap": "math.eval", "input": "2*(3+4)", "timeout": 10}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["output"] == 14
        assert answer["peer"] == nodes[0].peer_id_text
        assert answer["capability"] == "math.eval"
        assert answer["attempts"] == []
        assert len(base64.b64decode(answer["receipt"]["signature"])) == 64

        found = await api.client.get("/v1/find", params={"cap": "math", "timeout": 5})
        assert found.status_code == 200
        assert [r["peer_id"] for r in found.json()] == [nodes[0].peer_id_text]


async def test_a_streamed_ask_is_ndjson_ending_in_the_result(tmp_path: Path) -> None:
    text = "a text long enough to come back in several streamed chunks"
    async with asker_of_two(tmp_path) as (nodes, api):
        body = {"cap": "text.echo", "input": text, "stream": True, "timeout": 10}
        async with api.client.stream("POST", "/v1/ask", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            events: list[dict[str, Any]] = [
                json.loads(line) async for line in response.aiter_lines() if line
            ]
    *chunks, result = events
    assert len(chunks) > 1
    assert {e["event"] for e in chunks} == {"chunk"}
    assert "".join(e["data"] for e in chunks) == text
    assert result["event"] == "result"
    assert result["output"] == text
    assert result["peer"] == nodes[0].peer_id_text


async def test_ask_for_a_capability_nobody_offers_is_404(tmp_path: Path) -> None:
    async with asker_of_two(tmp_path) as (_, api):
        response = await api.client.post(
            "/v1/ask", json={"cap": "image.generate", "input": "a llama", "timeout": 2}
        )
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["type"] == "NoCandidatesError"
        assert "image.generate" in error["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "request body is not JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'{"input": "x"}', "'cap' (a capability name) is required"),
        (b'{"cap": "text.echo", "params": [1]}', "'params' must be an object"),
        (b'{"cap": "text.echo", "timeout": -1}', "timeout must be in"),
    ],
)
async def test_a_bad_ask_body_is_400(tmp_path: Path, content: bytes, message: str) -> None:
    async with start_node(tmp_path / "n0") as node, serving(node) as api:
        response = await api.client.post(
            "/v1/ask", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]
        assert node.tasks_sent == {}


async def test_connect_dials_a_peer(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "n0") as other,
        start_node(tmp_path / "n1") as node,
        serving(node) as api,
    ):
        response = await api.client.post("/v1/connect", json={"addr": other.addrs()[0]})
        assert response.status_code == 200, response.text
        assert response.json() == {"peer_id": other.peer_id_text}
        assert node.status().connected_peers == 1
        missing = await api.client.post("/v1/connect", json={})
        assert missing.status_code == 400


async def test_metrics_in_prometheus_text_format(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "worker") as worker,
        start_node(tmp_path / "asker", bootstrap=(worker.addrs()[0],)) as asker,
        serving(worker) as api,
    ):
        await asker.ask("text.echo", "hello", peer=worker.peer_id_text)
        response = await api.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        lines = response.text.splitlines()
        sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+-]+$')
        for line in lines:
            assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line)
        served = [x for x in lines if x.startswith("llamanet_tasks_served_total{")]
        assert any('capability="text.echo"' in x and x.endswith(" 1") for x in served)
        assert "llamanet_task_duration_seconds_count 1" in lines
        assert any(x.startswith("llamanet_peers_connected ") for x in lines)


async def test_metrics_count_dht_operations_with_their_depth(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "worker") as worker,
        start_node(tmp_path / "asker", bootstrap=(worker.addrs()[0],)) as asker,
        serving(worker) as api,
    ):
        assert await worker.dht.get_record(asker.peer_id) is not None
        lines = (await api.client.get("/metrics")).text.splitlines()
        ops = {
            x.split(" ")[0]: float(x.split(" ")[1]) for x in lines if x.startswith("llamanet_dht_")
        }
        assert ops['llamanet_dht_operations_total{op="get_record",outcome="ok"}'] >= 1
        assert ops['llamanet_dht_operation_seconds_count{op="get_record"}'] >= 1
        assert ops['llamanet_dht_operation_seconds_bucket{le="+Inf",op="get_record"}'] >= 1
        assert ops['llamanet_dht_lookup_hops_bucket{le="+Inf",op="get_record"}'] >= 1
        assert ops['llamanet_dht_queries_total{op="get_record"}'] >= 1
        assert any(k.startswith('llamanet_dht_operations_total{op="provide"') for k in ops)


async def test_an_ask_whose_client_left_stops_on_the_peer(tmp_path: Path) -> None:
    slow = SlowSkillDouble()
    async with (
        start_node(tmp_path / "worker", backends=[slow]) as worker,
        start_node(tmp_path / "asker", bootstrap=(worker.addrs()[0],)) as asker,
        serving(asker) as api,
    ):
        body = {"cap": "test.slow", "input": None, "peer": worker.peer_id_text, "timeout": 60}
        with pytest.raises(httpx.ReadTimeout):
            await api.client.post("/v1/ask", json=body, timeout=1.0)
        await eventually(lambda: slow.cancelled == 1, timeout=10)
        assert slow.finished == 0
