"""Chat sessions: the worker's bounded store, the requester's conversations, and
both ends over real nodes (the model is the Ollama test double, which records
what reaches the model server)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from llamanet.backends.base import TaskRequest
from llamanet.backends.ollama import OllamaBackend
from llamanet.errors import SessionUnknownError, SkillInputError, TaskFailedError
from llamanet.node.sessions import (
    FOLLOW_UP,
    Conversations,
    SessionLimits,
    SessionStore,
    trim,
)
from llamanet.protocol.codec import pack_value
from llamanet.protocol.messages import TaskOffer

from ..nodes import providers_of, start_node
from ..ollama_double import REPLY, running_ollama_double

REPLY_TEXT = "".join(REPLY)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": "be brief"}


# --- the worker's store ----------------------------------------------------------------


def test_a_follow_up_gets_the_kept_history_in_front() -> None:
    store = SessionStore(clock=Clock())
    first = store.context("peer", "s", {"messages": [SYSTEM, user("hi")]})
    assert first == [SYSTEM, user("hi")]
    store.keep("peer", "s", first, "hello")
    follow = store.context("peer", "s", {"messages": [user("again")], FOLLOW_UP: True})
    assert follow == [SYSTEM, user("hi"), assistant("hello"), user("again")]


def test_a_follow_up_to_an_unknown_session_or_another_requesters_is_refused() -> None:
    store = SessionStore(clock=Clock())
    store.keep("alice", "s", [user("hi")], "hello")
    with pytest.raises(SessionUnknownError, match="send the whole conversation") as info:
        store.context("mallory", "s", {"messages": [user("x")], FOLLOW_UP: True})
    assert info.value.code == "session_unknown"
    with pytest.raises(SessionUnknownError):
        store.context("alice", "other", {"messages": [user("x")], FOLLOW_UP: True})


def test_a_turn_without_follow_up_starts_the_session_again() -> None:
    store = SessionStore(clock=Clock())
    store.keep("p", "s", [user("old")], "old reply")
    fresh = store.context("p", "s", {"messages": [user("new start")]})
    assert fresh == [user("new start")]
    store.keep("p", "s", fresh, "ok")
    assert store.context("p", "s", {"messages": [], FOLLOW_UP: True}) == [
        user("new start"),
        assistant("ok"),
    ]


def test_idle_sessions_expire() -> None:
    clock = Clock()
    store = SessionStore(SessionLimits(idle_timeout=60), clock=clock)
    store.keep("p", "s", [user("hi")], "hello")
    clock.now += 59
    store.context("p", "s", {"messages": [], FOLLOW_UP: True})  # use renews it
    clock.now += 59
    store.context("p", "s", {"messages": [], FOLLOW_UP: True})
    clock.now += 61
    with pytest.raises(SessionUnknownError):
        store.context("p", "s", {"messages": [], FOLLOW_UP: True})
    assert store.expired == 1


def test_least_recently_used_sessions_are_evicted() -> None:
    clock = Clock()
    store = SessionStore(SessionLimits(max_sessions=2), clock=clock)
    store.keep("p", "a", [user("a")], "ra")
    store.keep("p", "b", [user("b")], "rb")
    store.context("p", "a", {"messages": [], FOLLOW_UP: True})  # a is now the newest
    store.keep("p", "c", [user("c")], "rc")
    assert len(store) == 2 and store.evicted == 1
    with pytest.raises(SessionUnknownError):
        store.context("p", "b", {"messages": [], FOLLOW_UP: True})
    store.context("p", "a", {"messages": [], FOLLOW_UP: True})


def test_history_is_trimmed_oldest_first_keeping_system_messages() -> None:
    limits = SessionLimits(max_messages=4)
    history = [SYSTEM, user("1"), assistant("r1"), user("2"), assistant("r2"), user("3")]
    assert trim(history, limits) == [SYSTEM, user("2"), assistant("r2"), user("3")]
    small = SessionLimits(max_bytes=len(pack_value([SYSTEM, user("3")])))
    assert trim(history, small) == [SYSTEM, user("3")]


message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant"]),
        "content": st.text(max_size=200),
    }
)


@given(
    st.lists(message, max_size=40),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=64, max_value=4000),
)
def test_trim_always_fits_and_keeps_order(
    history: list[dict[str, str]], max_messages: int, max_bytes: int
) -> None:
    kept = trim(history, SessionLimits(max_messages=max_messages, max_bytes=max_bytes))
    assert len(kept) <= max_messages
    assert len(pack_value(kept)) <= max_bytes or not kept
    # What is kept is a subsequence of the history that ends with its newest
    # message, unless that message alone is over the limit.
    it = iter(history)
    assert all(any(m is h for h in it) for m in kept)
    if history and len(pack_value([history[-1]])) <= max_bytes:
        assert kept[-1] is history[-1]


def test_bad_messages_are_a_bad_request() -> None:
    store = SessionStore(clock=Clock())
    with pytest.raises(SkillInputError):
        store.context("p", "s", {"messages": ["not a map"]})


# --- the requester's conversations --------------------------------------------------------


def test_conversations_send_the_new_turn_to_the_holder_and_everything_elsewhere() -> None:
    conversations = Conversations(clock=Clock())
    conv = conversations.get("s")
    turn1 = {"messages": [user("hi")]}
    assert conversations.turn_input(conv, turn1, b"A", full=False) == turn1
    conversations.answered(conv, turn1, b"A", "hello")
    turn2 = {"messages": [user("again")]}
    assert conversations.turn_input(conv, turn2, b"A", full=False) == {
        "messages": [user("again")],
        FOLLOW_UP: True,
    }
    everything = {"messages": [user("hi"), assistant("hello"), user("again")]}
    assert conversations.turn_input(conv, turn2, b"B", full=False) == everything
    assert conversations.turn_input(conv, turn2, b"A", full=True) == everything


# --- over real nodes --------------------------------------------------------------------------


class WireLog:
    """Records the chat inputs as they arrive at a worker, before the session store
    adds the kept history."""

    def __init__(self, node: Any) -> None:
        self.inputs: list[Any] = []
        original = node.worker.with_session_context

        def recording(request: TaskRequest) -> Any:
            self.inputs.append(request.input)
            return original(request)

        node.worker.with_session_context = recording


def model_messages(double: Any) -> list[Any]:
    """The messages of the last chat request the model server received."""
    chats = [body for path, body in double.requests if path == "/api/chat"]
    return list(chats[-1]["messages"])


async def test_follow_ups_carry_only_the_new_turn_and_the_model_sees_everything(
    tmp_path: Path,
) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        async with (
            start_node(tmp_path / "a", backends=[backend], warmup=False) as a,
            start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
        ):
            wire = WireLog(a)
            first = await b.ask("llm.chat", {"messages": [user("hi")]}, session="s1")
            assert first.output == REPLY_TEXT
            second = await b.ask("llm.chat", {"messages": [user("and then?")]}, session="s1")
            assert second.peer == a.peer_id_text
            assert wire.inputs == [
                {"messages": [user("hi")]},
                {"messages": [user("and then?")], FOLLOW_UP: True},
            ]
            assert model_messages(double) == [
                user("hi"),
                assistant(REPLY_TEXT),
                user("and then?"),
            ]
            # Another requester's session of the same name is its own.
            async with start_node(tmp_path / "c", bootstrap=(a.addrs()[0],)) as c:
                await c.ask("llm.chat", {"messages": [user("other")]}, session="s1")
                assert model_messages(double) == [user("other")]
        await backend.aclose()


async def test_an_expired_session_is_resent_whole_automatically(tmp_path: Path) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        async with (
            start_node(
                tmp_path / "a", backends=[backend], warmup=False, session_idle_timeout=0.3
            ) as a,
            start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
        ):
            wire = WireLog(a)
            await b.ask("llm.chat", {"messages": [user("one")]}, session="s")
            await trio.sleep(0.5)
            answer = await b.ask("llm.chat", {"messages": [user("two")]}, session="s")
            assert answer.output == REPLY_TEXT
            everything = [user("one"), assistant(REPLY_TEXT), user("two")]
            assert wire.inputs[1:] == [
                {"messages": [user("two")], FOLLOW_UP: True},
                {"messages": everything},
            ]
            assert model_messages(double) == everything
            assert a.worker.outcomes[("llm.chat", "failed")] == 1

            # On the wire, the worker's answer is the typed error.
            offer = TaskOffer(
                id=os.urandom(16),
                cap="llm.chat",
                input={"messages": [user("x")], FOLLOW_UP: True},
                deadline=int((time.time() + 10) * 1000),
                session="never-seen",
            )
            with pytest.raises(TaskFailedError, match="send the whole conversation") as info:
                await b.client.run(a.peer_id, offer)
            assert info.value.code == "session_unknown"
        await backend.aclose()


async def test_a_session_fails_over_with_its_whole_context(tmp_path: Path) -> None:
    async with running_ollama_double() as double:
        first_backend, second_backend = OllamaBackend(double.url), OllamaBackend(double.url)
        await first_backend.open()
        await second_backend.open()
        async with (
            start_node(tmp_path / "a1", backends=[first_backend], warmup=False) as a1,
            start_node(tmp_path / "a2", backends=[second_backend], warmup=False) as a2,
            start_node(tmp_path / "b", bootstrap=(a1.addrs()[0], a2.addrs()[0])) as b,
        ):
            await providers_of(b, "llm.chat", 2)
            await b.ask("llm.chat", {"messages": [user("one")]}, session="s")
            holder = a1 if b.conversations.get("s").peer == a1.peer_id else a2
            other = a2 if holder is a1 else a1
            wire = WireLog(other)
            await holder.aclose()  # the holder goes away mid-conversation
            answer = await b.ask("llm.chat", {"messages": [user("two")]}, session="s")
            assert answer.peer == other.peer_id_text
            assert wire.inputs == [{"messages": [user("one"), assistant(REPLY_TEXT), user("two")]}]
        await first_backend.aclose()
        await second_backend.aclose()
