"""What going through the network adds to a model call.

One llama-cpp-python server on loopback runs the tiny random-weight Llama model
(``llamanet/testing/tiny_gguf.py``); a ``llamanet node`` daemon serves it with
``--backend openai:URL``; an in-process requester node asks that daemon for
``llm.chat``, streamed.  The same chat (same prompt, seed and length) is sent
straight to the server over HTTP, alternating with the network path in one run,
so both see the same server in the same state.  Measured: time to the first token
and to the end of the answer.

    python -m bench.llm_latency [--rounds 30] [--tokens 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from llamanet.node.node import open_node
from llamanet.testing.llama_server import running_llama_server
from llamanet.testing.tiny_gguf import find_vocab, write_tiny_llama

from ._util import loopback_node_config, percentile, wait_for_api

PROMPT = [{"role": "user", "content": "Tell me about peer-to-peer networks."}]
ROUND_TIMEOUT = 30.0


async def direct(http: httpx.AsyncClient, url: str, tokens: int) -> tuple[float, float, int]:
    """First token and total, in ms, and the tokens, calling the server itself."""
    body = {
        "messages": PROMPT,
        "max_tokens": tokens,
        "seed": 1,
        "temperature": 0.0,
        "stream": True,
    }
    count = 0
    first = 0.0
    started = time.perf_counter()
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            delta = json.loads(line[5:])["choices"][0].get("delta", {})
            if delta.get("content"):
                count += 1
                first = first or time.perf_counter() - started
    total = time.perf_counter() - started
    return first * 1000, total * 1000, count


async def measure(url: str, worker_addr: str, home: Path, rounds: int, tokens: int) -> Any:
    worker = worker_addr.rsplit("/p2p/", 1)[1]
    samples: dict[str, list[tuple[float, float]]] = {"direct": [], "network": []}
    config = loopback_node_config(home, bootstrap=(worker_addr,))
    # The direct path keeps its connection open too, as the worker's backend does.
    async with open_node(config) as node, httpx.AsyncClient(timeout=ROUND_TIMEOUT) as http:

        async def via_network() -> tuple[float, float, int]:
            count = 0
            first = 0.0
            started = time.perf_counter()

            async def on_chunk(data: object) -> None:
                nonlocal count, first
                count += 1
                first = first or time.perf_counter() - started

            await node.ask(
                "llm.chat",
                {"messages": PROMPT},
                params={"max_tokens": tokens, "seed": 1, "temperature": 0.0},
                stream=True,
                on_chunk=on_chunk,
                peer=worker,
                timeout=ROUND_TIMEOUT,
            )
            return first * 1000, (time.perf_counter() - started) * 1000, count

        for _warm in range(2):  # connections, pooled streams, the server's caches
            await direct(http, url, tokens)
            await via_network()
        counts = set()
        for _ in range(rounds):
            with trio.fail_after(2 * ROUND_TIMEOUT):
                first, total, count = await direct(http, url, tokens)
                samples["direct"].append((first, total))
                counts.add(count)
                first, total, count = await via_network()
                samples["network"].append((first, total))
                counts.add(count)
    if len(counts) != 1:
        raise RuntimeError(f"the two paths generated different lengths: {counts}")
    return samples, counts.pop()


def summarise(samples: list[tuple[float, float]]) -> dict[str, float]:
    firsts, totals = [s[0] for s in samples], [s[1] for s in samples]
    return {
        "first_token_p50_ms": round(statistics.median(firsts), 3),
        "first_token_p90_ms": round(percentile(firsts, 90), 3),
        "total_p50_ms": round(statistics.median(totals), 3),
        "total_p90_ms": round(percentile(totals, 90), 3),
    }


def run(rounds: int, tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
        base = Path(tmp)
        model = write_tiny_llama(base / "tiny-llama.gguf", find_vocab())
        with running_llama_server(model, log=base / "server.log") as server:
            worker = subprocess.Popen(
                [sys.executable, "-m", "llamanet", "node", "--home", str(base / "worker"),
                 "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--log-level", "warning",
                 "--bootstrap-file", str(base / "none.toml"), "--pow-difficulty", "8",
                 "--no-warmup",
                 "--backend", f"openai:{server.url}"],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                worker_addr = wait_for_api(base / "worker", timeout=60)["addrs"][0]
                samples, count = trio.run(
                    measure, server.url, worker_addr, base / "requester", rounds, tokens
                )
            finally:
                worker.terminate()
                worker.wait(timeout=10)
    direct_figures, network_figures = summarise(samples["direct"]), summarise(samples["network"])
    return {
        "rounds": rounds,
        "tokens": count,
        "direct": direct_figures,
        "network": network_figures,
        "added_first_token_ms": round(
            network_figures["first_token_p50_ms"] - direct_figures["first_token_p50_ms"], 3
        ),
        "added_total_ms": round(
            network_figures["total_p50_ms"] - direct_figures["total_p50_ms"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(max(1, min(args.rounds, 1000)), max(1, min(args.tokens, 256)))
    if args.json:
        print(json.dumps(result))
        return
    d, n = result["direct"], result["network"]
    print(f"llm.chat, tiny model, {result['tokens']} tokens streamed, {result['rounds']} rounds:")
    print(f"  direct HTTP   first token p50 {d['first_token_p50_ms']:.2f} ms"
          f"  total p50 {d['total_p50_ms']:.2f} ms")  # fmt: skip
    print(f"  via llamanet  first token p50 {n['first_token_p50_ms']:.2f} ms"
          f"  total p50 {n['total_p50_ms']:.2f} ms")  # fmt: skip
    print(f"  added: first token {result['added_first_token_ms']:.2f} ms,"
          f" total {result['added_total_ms']:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
