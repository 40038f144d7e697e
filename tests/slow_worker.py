"""A worker node in its own process, serving the ``test.slow`` test double, so a test
can kill it with SIGKILL mid-task.  Prints its first address, then runs forever.

    python -m tests.slow_worker HOME
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from llamanet.backends.builtin import BuiltinBackend

from .doubles import SlowSkillDouble
from .nodes import start_node


async def main(home: Path) -> None:
    async with start_node(home, backends=[BuiltinBackend(), SlowSkillDouble()]) as node:
        print(node.addrs()[0], flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
