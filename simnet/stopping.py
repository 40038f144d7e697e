"""Stopping a simnet process at Ctrl-C or SIGTERM by cancelling its nodes.

Left to trio's own SIGINT handling, the KeyboardInterrupt is raised in whatever
code is running when the signal lands, which in a swarm is some node's py-libp2p
task: that node's services die mid-step while the rest of the swarm runs on, and
a shutdown can wait on what the dead task was to finish. Receiving the signal as
an event instead turns it into one cancellation of the whole swarm, from the top.
"""

from __future__ import annotations

import signal
from typing import Any

import trio

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """Cancels ``scope`` at the first SIGINT or SIGTERM; ``signal`` says which came."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.signal: int | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start with ``nursery.start``: the signals are this task's once it has
        started, so nothing started after it can be interrupted mid-step."""
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for received in signals:
                self.signal = received
                self.scope.cancel()
                return
