"""What a new identity costs: the proof-of-work at the default swarm difficulty.

An identity is an Ed25519 key whose peer ID, hashed with a nonce, starts with
``difficulty`` zero bits; finding the nonce takes 2^difficulty hashes on average.

    python -m bench.identity_cost [--identities 12] [--difficulty 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from llamanet.protocol.config import DEFAULT_POW_DIFFICULTY
from llamanet.protocol.pow import solve_pow
from llamanet.trust.keys import Identity

from ._util import percentile


def run(identities: int, difficulty: int) -> dict[str, Any]:
    seconds = []
    for _ in range(identities):
        identity = Identity(os.urandom(32))
        started = time.process_time()  # CPU time: what an attacker pays
        assert solve_pow(identity.peer_id, difficulty) is not None
        seconds.append(time.process_time() - started)
    return {
        "difficulty": difficulty,
        "identities": identities,
        "mean_s": round(statistics.mean(seconds), 3),
        "median_s": round(statistics.median(seconds), 3),
        "p90_s": round(percentile(seconds, 90), 3),
        "hashes_per_s": round(2**difficulty / statistics.mean(seconds)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--difficulty", type=int, default=DEFAULT_POW_DIFFICULTY)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(max(1, min(args.identities, 200)), max(0, min(args.difficulty, 28)))
    if args.json:
        print(json.dumps(result))
        return
    print(f"one identity at {result['difficulty']} bits: mean {result['mean_s']:.2f} s of CPU, "
          f"median {result['median_s']:.2f} s, p90 {result['p90_s']:.2f} s "
          f"({result['identities']} identities, ~{result['hashes_per_s']:,} hashes/s)")  # fmt: skip


if __name__ == "__main__":
    main()
