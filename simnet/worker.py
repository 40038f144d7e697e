"""One simnet process in real and lan modes: ``python -m simnet.worker`` reads its
share of the scenario as one JSON line on stdin, runs those nodes, and writes
events as JSON lines on stdout until the workload is done (the requesters' share)
or it is told to stop (SIGTERM, or stdin closing)."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import trio

from .scenario import parse_scenario
from .stopping import StopOnSignal
from .swarm import Share, run_share


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _main(spec: dict[str, Any]) -> None:
    scenario = parse_scenario(spec["scenario"], source="simnet worker spec")
    share = Share(
        indices=tuple(spec["indices"]),
        listen={int(k): v for k, v in spec["listen"].items()},
        bootstrap={int(k): v for k, v in spec["bootstrap"].items()},
        base=Path(spec["base"]),
        mdns=bool(spec.get("mdns", False)),
        api=bool(spec.get("api", False)),
        workload=bool(spec.get("workload", True)),
    )
    # The coordinator fixes when the workload starts in wall-clock time, so that
    # every process's churn schedule and the workload share one origin.
    t0 = trio.current_time() + (float(spec["t0_wall"]) - time.time())
    async with trio.open_nursery() as nursery:

        async def stop_on_eof() -> None:
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)  # type: ignore[call-arg]
            nursery.cancel_scope.cancel()

        await nursery.start(StopOnSignal(nursery.cancel_scope).run)
        nursery.start_soon(stop_on_eof)
        await run_share(scenario, share, _emit, t0=t0)
        nursery.cancel_scope.cancel()
    _emit({"type": "rss", "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(sys.stdin.readline())
    trio.run(_main, spec)


if __name__ == "__main__":
    main()
