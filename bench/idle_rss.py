"""Resident memory of an idle ``llamanet node`` daemon.

python -m bench.idle_rss [--settle 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._util import wait_for_api


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def measure(settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
        home = Path(tmp) / "idle"
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamanet", "node", "--home", str(home),
             "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--log-level", "warning",
             "--bootstrap-file", str(Path(tmp) / "none.toml"), "--pow-difficulty", "8"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_api(home)
            time.sleep(settle)
            rss = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return {"rss_mib": rss / 1024, "settle_s": settle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.settle)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"idle daemon RSS after {args.settle:.0f} s: {result['rss_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
