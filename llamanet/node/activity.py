"""What this node is doing and has just done: a bounded record of tasks, as trees.

Every task the node asks for (:meth:`Node.ask`, each attempt on a peer, the
copies of a verified task, workflows and their steps, a ``solve``) and every task
it serves for a peer is an :class:`Entry`.  An entry started while another is
running on the same node hangs under it, so a workflow shows its steps, a step
its ask, an ask its attempts (failover, hedging) or its verification copies, and
a served task the sub-tasks it delegated.

Nothing here does I/O.  Time comes from the injected ``clock``.  The *current*
entry (the one a new entry hangs under by default) travels in a context
variable, so it follows trio's task tree without being passed through every
call: a task started from inside :meth:`Activity.track` inherits it.

Bounds: at most ``max_recent`` finished top-level trees and ``max_entries``
entries in them (oldest trees go first), at most ``max_children`` children kept
per entry (the oldest finished ones go first, counted in ``omitted``), and text
fields cut to :data:`MAX_TEXT` characters.  Running entries are never dropped:
each stands for work that is really going on.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import trio

__all__ = [
    "CANCELLED",
    "FAILED",
    "OK",
    "RUNNING",
    "Activity",
    "Entry",
    "state_of",
]

RUNNING: Final = "running"
OK: Final = "ok"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

MAX_TEXT: Final = 300
DEFAULT_MAX_RECENT: Final = 100
DEFAULT_MAX_ENTRIES: Final = 2000
DEFAULT_MAX_CHILDREN: Final = 50

# Which Activity the current entry belongs to matters: simnet and the tests run
# many nodes in one process, and a context can outlive the entry it names.
_current: ContextVar[tuple[Activity, str] | None] = ContextVar("llamanet_activity", default=None)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def state_of(exc: BaseException) -> str:
    """``cancelled`` for a cancellation (or a group of nothing else), else ``failed``."""
    if isinstance(exc, trio.Cancelled | GeneratorExit):
        return CANCELLED
    if isinstance(exc, BaseExceptionGroup) and all(
        state_of(inner) == CANCELLED for inner in exc.exceptions
    ):
        return CANCELLED
    return FAILED


@dataclass(slots=True, eq=False)
class Entry:
    """One task, running or finished."""

    id: str
    kind: str
    """``ask``, ``attempt``, ``served``, ``workflow``, ``step`` or ``solve``."""
    capability: str
    started_at: float
    """Unix seconds."""
    peer: str = ""
    """Who runs it (asks, attempts) or who asked for it (served tasks)."""
    label: str = ""
    """What else identifies it: a step's id, a workflow's name, ``verify 3``..."""
    parent: str | None = None
    """The entry it hangs under, or for a top-level entry the id of a task
    elsewhere that it belongs to (a served sub-task's parent on the requester)."""
    state: str = RUNNING
    ended_at: float | None = None
    error: str = ""
    children: list[Entry] = field(default_factory=list)
    omitted: int = 0
    """Children dropped to keep the tree bounded."""
    attached: bool = False
    """Whether it hangs under another entry of this node."""

    def size(self) -> int:
        return 1 + sum(child.size() for child in self.children)

    def to_json(self, now: float) -> dict[str, Any]:
        end = self.ended_at if self.ended_at is not None else now
        return {
            "id": self.id,
            "kind": self.kind,
            "capability": self.capability,
            "peer": self.peer,
            "label": self.label,
            "parent": self.parent,
            "state": self.state,
            "started_at": round(self.started_at, 3),
            "duration_ms": round(max(0.0, end - self.started_at) * 1000, 1),
            "error": self.error,
            "children": [child.to_json(now) for child in self.children],
            "omitted": self.omitted,
        }


class Activity:
    """The node's record of tasks (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_recent: int = DEFAULT_MAX_RECENT,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_children: int = DEFAULT_MAX_CHILDREN,
    ) -> None:
        if min(max_recent, max_entries, max_children) < 1:
            raise ValueError("activity bounds must be at least 1")
        self._clock = clock
        self.max_recent = max_recent
        self.max_entries = max_entries
        self.max_children = max_children
        self._running: dict[str, Entry] = {}
        self._recent: deque[tuple[Entry, int]] = deque()
        """Finished top-level trees, oldest first, with their size when they ended."""
        self._recent_size = 0
        self._ids = itertools.count(1)

    def __contains__(self, entry_id: object) -> bool:
        """Whether ``entry_id`` is running."""
        return entry_id in self._running

    def current(self) -> str | None:
        """The running entry of this node the calling task runs under, if any."""
        value = _current.get()
        if value is None or value[0] is not self or value[1] not in self._running:
            return None
        return value[1]

    def start(
        self,
        kind: str,
        capability: str = "",
        *,
        parent: str | None = None,
        ambient: bool = True,
        peer: str = "",
        label: str = "",
        id: str | None = None,
    ) -> Entry:
        """Record a task that starts now.

        It hangs under ``parent`` if that entry is running here, else (with
        ``ambient``) under the current entry; otherwise it is top-level and keeps
        ``parent`` as a reference.  ``id`` is used unless it is already running
        (ids given by peers cannot be trusted to be unique).
        """
        if id is None or id in self._running:
            # Not hexadecimal, so never equal to a task id from the wire.
            id = f"t{next(self._ids)}"
        under = parent if parent in self._running else None
        if under is None and ambient:
            under = self.current()
        entry = Entry(
            id=id,
            kind=kind,
            capability=_cut(capability),
            started_at=self._clock(),
            peer=_cut(peer),
            label=_cut(label),
            parent=under or parent,
            attached=under is not None,
        )
        self._running[id] = entry
        if under is not None:
            self._adopt(self._running[under], entry)
        return entry

    def _adopt(self, parent: Entry, child: Entry) -> None:
        parent.children.append(child)
        if len(parent.children) <= self.max_children:
            return
        for index, sibling in enumerate(parent.children):
            if sibling.state != RUNNING:
                del parent.children[index]
                parent.omitted += 1
                return

    def finish(self, entry: Entry, state: str = OK, *, error: str = "") -> None:
        """Record that ``entry`` ended (``ok``, ``failed`` or ``cancelled``)."""
        if self._running.pop(entry.id, None) is not entry:
            return  # already finished
        entry.state = state
        entry.error = _cut(error)
        entry.ended_at = self._clock()
        if entry.attached:
            return  # kept in its parent's tree
        size = entry.size()
        self._recent.append((entry, size))
        self._recent_size += size
        while len(self._recent) > 1 and (
            len(self._recent) > self.max_recent or self._recent_size > self.max_entries
        ):
            _, dropped = self._recent.popleft()
            self._recent_size -= dropped

    def fail(self, entry: Entry, exc: BaseException) -> None:
        """End ``entry`` by ``exc``: ``cancelled``, or ``failed`` with its message."""
        state = state_of(exc)
        self.finish(entry, state, error=(str(exc) or type(exc).__name__) if state == FAILED else "")

    @contextmanager
    def track(
        self,
        kind: str,
        capability: str = "",
        *,
        parent: str | None = None,
        peer: str = "",
        label: str = "",
        id: str | None = None,
    ) -> Iterator[Entry]:
        """Record the block as a task; entries started inside it hang under it.
        An exception ends it as ``failed`` (with the message) or ``cancelled``."""
        entry = self.start(kind, capability, parent=parent, peer=peer, label=label, id=id)
        token = _current.set((self, entry.id))
        try:
            yield entry
        except BaseException as exc:
            self.fail(entry, exc)
            raise
        else:
            self.finish(entry, OK)
        finally:
            _current.reset(token)

    def in_flight(self) -> list[Entry]:
        """Running top-level entries, oldest first."""
        return [e for e in self._running.values() if not e.attached]

    def recent(self) -> list[Entry]:
        """Finished top-level entries, newest first."""
        return [entry for entry, _ in reversed(self._recent)]

    def snapshot(self, *, recent: int | None = None) -> dict[str, Any]:
        """Both lists as JSON trees (only the newest ``recent`` finished ones)."""
        now = self._clock()
        return {
            "in_flight": [e.to_json(now) for e in self.in_flight()],
            "recent": [e.to_json(now) for e in self.recent()[:recent]],
        }
