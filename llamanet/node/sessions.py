"""Conversation sessions, on both ends of a task.

A chat task (input ``{"messages": [...]}``) may name a ``session``.  The first turn,
or any turn sent without ``"follow_up": true``, carries the whole conversation; the
worker keeps it, with the model's reply, under (requester, session).  A follow-up
(``"follow_up": true``) carries only the new messages and the worker puts the kept
history in front of them.  A follow-up the worker holds no history for (never
seen, idle too long, evicted) fails with ``session_unknown``, and the requester
sends the whole conversation again.

:class:`SessionStore` is the worker's side: bounded in sessions (least recently
used go first), in messages and bytes per session (oldest turns go first, system
messages stay) and in idle time.  :class:`Conversations` is the requester's side:
the full history of each session it runs and the peer that holds it, so a
follow-up goes to that peer and a failover replays everything to the next one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from llamanet.errors import SessionUnknownError, SkillInputError
from llamanet.protocol.codec import pack_value

FOLLOW_UP: Final = "follow_up"


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionLimits:
    max_sessions: int = 256
    """Sessions kept at once; beyond it the least recently used is dropped."""
    max_messages: int = 64
    """Messages kept per session (system messages included)."""
    max_bytes: int = 256 * 1024
    """Encoded size of the messages kept per session."""
    idle_timeout: float = 1800.0
    """Seconds since a session was last used after which it is forgotten."""

    def __post_init__(self) -> None:
        if min(self.max_sessions, self.max_messages, self.max_bytes) <= 0:
            raise ValueError("session limits must be positive")
        if self.idle_timeout <= 0:
            raise ValueError("session idle_timeout must be positive")


Message = Mapping[str, Any]


@dataclass(slots=True)
class _Kept:
    messages: list[Message]
    used_at: float


def chat_messages(value: Any) -> list[Message] | None:
    """The ``messages`` of a chat input, or ``None`` if ``value`` is not one."""
    if not isinstance(value, Mapping):
        return None
    messages = value.get("messages")
    if not isinstance(messages, list):
        return None
    if not all(isinstance(m, Mapping) for m in messages):
        raise SkillInputError("every message must be a map with role and content")
    return list(messages)


def trim(messages: Sequence[Message], limits: SessionLimits) -> list[Message]:
    """Fit ``messages`` into ``limits``: drop the oldest turns first, then system
    messages, and the newest message last of all."""
    kept = list(messages)

    def too_big() -> bool:
        return len(kept) > limits.max_messages or len(pack_value(kept)) > limits.max_bytes

    while kept and too_big():
        older = kept[:-1]
        turn = next((i for i, m in enumerate(older) if m.get("role") != "system"), None)
        kept.pop(turn if turn is not None else 0)
    return kept


class SessionStore:
    """The worker's kept conversations, keyed by (requester, session)."""

    def __init__(self, limits: SessionLimits | None = None, *, clock: Callable[[], float]) -> None:
        self.limits = limits or SessionLimits()
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str], _Kept] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._kept)

    def _get(self, key: tuple[str, str]) -> _Kept | None:
        kept = self._kept.get(key)
        if kept is not None and self._clock() - kept.used_at > self.limits.idle_timeout:
            del self._kept[key]
            self.expired += 1
            return None
        return kept

    def context(self, requester: str, session: str, input: Mapping[str, Any]) -> list[Message]:
        """The messages the model should see for this turn."""
        messages = chat_messages(input) or []
        if not input.get(FOLLOW_UP):
            return messages
        kept = self._get((requester, session))
        if kept is None:
            raise SessionUnknownError(
                f"no history for session {session!r} here (unknown, expired or evicted); "
                "send the whole conversation"
            )
        kept.used_at = self._clock()
        self._kept.move_to_end((requester, session))
        return [*kept.messages, *messages]

    def keep(self, requester: str, session: str, context: Sequence[Message], reply: Any) -> None:
        """Remember ``context`` and the model's ``reply`` as the session's history."""
        history = list(context)
        if isinstance(reply, str):
            history.append({"role": "assistant", "content": reply})
        key = (requester, session)
        self._kept[key] = _Kept(trim(history, self.limits), self._clock())
        self._kept.move_to_end(key)
        self.sweep()
        while len(self._kept) > self.limits.max_sessions:
            self._kept.popitem(last=False)
            self.evicted += 1

    def sweep(self) -> None:
        """Forget sessions idle past the limit."""
        now = self._clock()
        for key in [k for k, v in self._kept.items() if now - v.used_at > self.limits.idle_timeout]:
            del self._kept[key]
            self.expired += 1


@dataclass(slots=True)
class Conversation:
    """The requester's copy of one session."""

    history: list[Message] = field(default_factory=list)
    peer: bytes | None = None
    """The worker that holds this session's history, if any does."""
    used_at: float = 0.0


class Conversations:
    """The requester's sessions: full history and the peer holding each."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_sessions: int = 1024,
        idle_timeout: float = 6 * 3600.0,
        limits: SessionLimits | None = None,
    ) -> None:
        self._clock = clock
        self._max_sessions = max_sessions
        self._idle_timeout = idle_timeout
        # Kept a little larger than a worker's, so a replay never holds less than
        # the worker had.
        self._limits = limits or SessionLimits(max_messages=256, max_bytes=1024 * 1024)
        self._sessions: OrderedDict[str, Conversation] = OrderedDict()

    def get(self, session: str) -> Conversation:
        now = self._clock()
        conversation = self._sessions.get(session)
        if conversation is None or now - conversation.used_at > self._idle_timeout:
            conversation = Conversation()
            self._sessions[session] = conversation
        conversation.used_at = now
        self._sessions.move_to_end(session)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return conversation

    def turn_input(
        self, conversation: Conversation, input: Mapping[str, Any], peer: bytes, *, full: bool
    ) -> dict[str, Any]:
        """What to send ``peer`` for a turn whose new messages are ``input``'s."""
        new = chat_messages(input) or []
        if not full and conversation.peer == peer and conversation.history:
            return {**input, "messages": new, FOLLOW_UP: True}
        body = {**input, "messages": [*conversation.history, *new]}
        body.pop(FOLLOW_UP, None)
        return body

    def answered(
        self, conversation: Conversation, input: Mapping[str, Any], peer: bytes, reply: Any
    ) -> None:
        history = [*conversation.history, *(chat_messages(input) or [])]
        if isinstance(reply, str):
            history.append({"role": "assistant", "content": reply})
        conversation.history = trim(history, self._limits)
        conversation.peer = peer
        conversation.used_at = self._clock()

    def forget(self, session: str) -> None:
        self._sessions.pop(session, None)
