"""Task round trips between two processes on loopback, beside a raw TCP floor.

Measures, in one run:

* llamanet: p50/p99 of one tiny ``text.echo`` task on an established connection
  (pooled stream, receipt verified), and tasks/s with 32 in flight; the worker is
  a real ``llamanet node`` daemon in its own process;
* floor: the same message pattern (varint-framed msgpack request, one reply) over
  raw trio TCP to an echo server in its own process, sequentially and with 32 in
  flight on 32 connections.

    python -m bench.task_rtt [--tasks 3000] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from llamanet.adapters.libp2p_host import Libp2pByteStream, build_host, open_stream
from llamanet.node.node import open_node
from llamanet.protocol.codec import FrameDecoder, frame
from llamanet.protocol.messages import TaskOffer
from llamanet.protocol.peer_ids import peer_id_from_text
from llamanet.trust.keys import Identity

from ._util import loopback_node_config, percentile, wait_for_api

IN_FLIGHT = 32
Call = Callable[[], Awaitable[None]]


# -- raw floor ---------------------------------------------------------------------


async def echo_server(port: int) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                decoder.receive_data(data)
                for body in decoder.frames():
                    reply = msgpack.unpackb(body)
                    await stream.send_all(frame(msgpack.packb(reply)))
        except trio.BrokenResourceError:
            return

    await trio.serve_tcp(handle, port, host="127.0.0.1")


async def _raw_call(stream: trio.SocketStream, decoder: FrameDecoder, body: bytes) -> None:
    await stream.send_all(frame(body))
    while True:
        for _ in decoder.frames():
            return
        decoder.receive_data(await stream.receive_some(65536))


async def raw_floor(port: int, tasks: int) -> dict[str, float]:
    body = msgpack.packb({"t": "task", "id": os.urandom(16), "cap": "text.echo", "input": "x"})
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(IN_FLIGHT + 1)]
    for stream in streams:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    calls = [functools.partial(_raw_call, st, FrameDecoder(), body) for st in streams]
    figures = await _figures(calls[0], calls[1:], tasks)
    for stream in streams:
        await stream.aclose()
    return figures


async def _figures(one: Call, lanes: Sequence[Call], tasks: int) -> dict[str, float]:
    """Sequential round trips through ``one`` (after a warm-up), then ``tasks`` more
    spread over ``lanes`` running at once."""
    for _ in range(200):
        await one()
    samples = []
    for _ in range(tasks):
        started = time.perf_counter()
        await one()
        samples.append((time.perf_counter() - started) * 1000)
    remaining = tasks

    async def pump(call: Call) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for call in lanes:
            nursery.start_soon(pump, call)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 99),
        "per_s_32": tasks / (time.perf_counter() - started),
    }


# -- py-libp2p floor ------------------------------------------------------------------
# The same framing over a bare py-libp2p stream (TCP + Noise + Yamux, no llamanet
# logic), to show how much of a task's time is the libp2p stack itself.

ECHO_PROTOCOL = TProtocol("/llamanet-bench/echo/1.0.0")


async def libp2p_echo_server(ready_file: str) -> None:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = build_host(Identity.generate(), listen)

    async def handle(raw: INetStream) -> None:
        stream = Libp2pByteStream(raw)
        decoder = FrameDecoder()
        while True:
            data = await stream.read()
            if not data:
                await stream.close()
                return
            decoder.receive_data(data)
            for body in decoder.frames():
                await stream.write(frame(body))

    host.set_stream_handler(ECHO_PROTOCOL, handle)
    async with host.run(listen):
        await trio.Path(ready_file).write_text(str(host.get_addrs()[0]))
        await trio.sleep_forever()


async def _echo_call(stream: Libp2pByteStream, decoder: FrameDecoder, body: bytes) -> None:
    await stream.write(frame(body))
    while True:
        for _ in decoder.frames():
            return
        decoder.receive_data(await stream.read())


async def libp2p_floor(addr: str, tasks: int) -> dict[str, float]:
    body = msgpack.packb({"t": "task", "id": os.urandom(16), "cap": "text.echo", "input": "x"})
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = build_host(Identity.generate(), listen)
    async with host.run(listen):
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await host.connect(info)
        peer = bytes(info.peer_id.to_bytes())
        streams = [await open_stream(host, peer, ECHO_PROTOCOL) for _ in range(IN_FLIGHT + 1)]
        calls = [functools.partial(_echo_call, st, FrameDecoder(), body) for st in streams]
        figures = await _figures(calls[0], calls[1:], tasks)
        await host.close()
    return figures


# -- llamanet ----------------------------------------------------------------------


async def llamanet_tasks(worker_addr: str, tasks: int, home: Path) -> dict[str, float]:
    config = loopback_node_config(home / "requester", bootstrap=(worker_addr,))
    worker_text = worker_addr.rsplit("/p2p/", 1)[1]
    worker = peer_id_from_text(worker_text)
    async with open_node(config) as node:

        def offer() -> TaskOffer:
            return TaskOffer(
                id=os.urandom(16),
                cap="text.echo",
                input="x",
                deadline=int((time.time() + 30) * 1000),
            )

        async def one_task() -> None:
            # The result's receipt is verified inside client.run.
            result = await node.client.run(worker, offer())
            assert result.output == "x"

        figures = await _figures(one_task, [one_task] * IN_FLIGHT, tasks)
        ask_samples = []
        for _ in range(min(tasks, 1000)):
            started = time.perf_counter()
            await node.ask("text.echo", "x", peer=worker_text)
            ask_samples.append((time.perf_counter() - started) * 1000)
        return {**figures, "ask_p50_ms": statistics.median(ask_samples)}


def run(tasks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
        base = Path(tmp)
        port = _free_port()
        echo = subprocess.Popen(
            [sys.executable, "-m", "bench.task_rtt", "--echo-server", str(port)]
        )
        ready = base / "libp2p-echo.addr"
        p2p_echo = subprocess.Popen(
            [sys.executable, "-m", "bench.task_rtt", "--libp2p-echo-server", str(ready)]
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "llamanet", "node", "--home", str(base / "worker"),
             "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--log-level", "warning",
             "--bootstrap-file", str(base / "none.toml"), "--pow-difficulty", "8"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            worker_addr = wait_for_api(base / "worker")["addrs"][0]
            _wait_until(lambda: _accepts(port) and ready.exists())
            floor = trio.run(raw_floor, port, tasks)
            p2p_floor = trio.run(libp2p_floor, ready.read_text(), tasks)
            ours = trio.run(llamanet_tasks, worker_addr, tasks, base)
        finally:
            for proc in (echo, p2p_echo, worker):
                proc.terminate()
                proc.wait(timeout=10)
    return {
        "tasks": tasks,
        "in_flight": IN_FLIGHT,
        "llamanet": ours,
        "raw_tcp_msgpack": floor,
        "raw_libp2p_stream": p2p_floor,
    }


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark helper process did not start")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--libp2p-echo-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        trio.run(echo_server, args.echo_server)
        return
    if args.libp2p_echo_server:
        trio.run(libp2p_echo_server, args.libp2p_echo_server)
        return
    result = run(args.tasks)
    if args.json:
        print(json.dumps(result))
        return
    ours, floor = result["llamanet"], result["raw_tcp_msgpack"]
    p2p = result["raw_libp2p_stream"]
    print(f"task round trip, tiny text.echo, established connection ({args.tasks} tasks):")
    print(f"  llamanet  p50 {ours['p50_ms']:.3f} ms  p99 {ours['p99_ms']:.3f} ms"
          f"  (node.ask p50 {ours['ask_p50_ms']:.3f} ms)")  # fmt: skip
    print(f"  raw TCP   p50 {floor['p50_ms']:.3f} ms  p99 {floor['p99_ms']:.3f} ms")
    print(f"  libp2p    p50 {p2p['p50_ms']:.3f} ms  p99 {p2p['p99_ms']:.3f} ms  (bare stream)")
    print(f"throughput, {IN_FLIGHT} in flight:")
    print(f"  llamanet  {ours['per_s_32']:.0f} tasks/s")
    print(f"  raw TCP   {floor['per_s_32']:.0f} round trips/s")
    print(f"  libp2p    {p2p['per_s_32']:.0f} round trips/s (bare streams)")


if __name__ == "__main__":
    main()
