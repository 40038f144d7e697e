from __future__ import annotations

import re
from contextlib import aclosing
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import llamanet.backends
from llamanet.backends import (
    BUILTIN_SKILLS,
    Backend,
    BuiltinBackend,
    Chunk,
    Completion,
    TaskRequest,
)
from llamanet.backends.builtin import (
    ECHO_CHUNK_CHARS,
    MAX_TEXT_CHARS,
    echo_chunks,
    text_stats,
)
from llamanet.errors import (
    TASK_ERROR_CODES,
    BackendError,
    SkillInputError,
    UnsupportedCapabilityError,
)

ALL_SKILLS = ("math.eval", "text.echo", "text.stats")


def request(capability: str, input: Any, *, stream: bool = True) -> TaskRequest:
    return TaskRequest(
        id=b"\x01" * 16, capability=capability, requested=capability, input=input, stream=stream
    )


async def run(capability: str, input: Any, *, stream: bool = True) -> tuple[list[Any], Completion]:
    """Every chunk's data, then the completion; checks the stream's shape on the way."""
    items = [
        item async for item in BuiltinBackend().execute(request(capability, input, stream=stream))
    ]
    *chunks, completion = items
    assert isinstance(completion, Completion)
    data = []
    for chunk in chunks:
        assert isinstance(chunk, Chunk)
        data.append(chunk.data)
    return data, completion


# --- the backend ----------------------------------------------------------


def test_is_a_backend() -> None:
    backend: Backend = BuiltinBackend()
    assert isinstance(backend, Backend)
    assert backend.name == "builtin"
    assert backend.models() == ()


def test_serves_every_skill_by_default_in_stable_order() -> None:
    assert tuple(BuiltinBackend().capabilities()) == ALL_SKILLS
    assert tuple(BUILTIN_SKILLS) == ALL_SKILLS
    reordered = BuiltinBackend(["text.stats", "math.eval", "text.stats"])
    assert tuple(reordered.capabilities()) == ("math.eval", "text.stats")
    assert tuple(BuiltinBackend([]).capabilities()) == ()


def test_descriptions_are_one_line() -> None:
    for description in BUILTIN_SKILLS.values():
        assert description
        assert "\n" not in description


def test_unknown_skill_lists_the_available_ones() -> None:
    with pytest.raises(
        ValueError, match=re.escape("llm.chat; available: " + ", ".join(ALL_SKILLS))
    ):
        BuiltinBackend(["text.echo", "llm.chat"])
    with pytest.raises(TypeError, match="not one string"):
        BuiltinBackend("text.echo")


@pytest.mark.parametrize(
    ("backend", "capability"),
    [(BuiltinBackend(), "llm.chat"), (BuiltinBackend(["text.echo"]), "math.eval")],
)
async def test_unsupported_capability(backend: BuiltinBackend, capability: str) -> None:
    with pytest.raises(UnsupportedCapabilityError, match=re.escape(repr(capability))) as info:
        async for _ in backend.execute(request(capability, "x")):
            pass
    assert isinstance(info.value, BackendError)
    assert info.value.code == "unsupported"
    assert info.value.code in TASK_ERROR_CODES


def test_package_exports() -> None:
    assert sorted(llamanet.backends.__all__) == [
        "BUILTIN_SKILLS",
        "Backend",
        "BuiltinBackend",
        "Chunk",
        "Completion",
        "TaskRequest",
    ]
    for name in llamanet.backends.__all__:
        assert hasattr(llamanet.backends, name)


# --- text.echo ------------------------------------------------------------


async def test_echo_streams_word_preserving_chunks() -> None:
    text = "The quick brown fox jumps over the lazy dog; supercalifragilisticexpialidocious!"
    chunks, completion = await run("text.echo", text)
    assert chunks == [
        "The quick brown ",
        "fox jumps over ",
        "the lazy dog; ",
        "supercalifragili",
        "sticexpialidocio",
        "us!",
    ]
    assert completion.output == text
    assert completion.usage == {"input_chars": 80, "output_chars": 80, "chunks": 6}


async def test_echo_empty_string_gives_no_chunks() -> None:
    chunks, completion = await run("text.echo", "")
    assert chunks == []
    assert completion.output == ""
    assert completion.usage == {"input_chars": 0, "output_chars": 0, "chunks": 0}


async def test_echo_bytes() -> None:
    data = b"hello  world  and more bytes here"
    chunks, completion = await run("text.echo", data)
    assert chunks == [b"hello  world  ", b"and more bytes ", b"here"]
    assert completion.output == data


async def test_echo_without_stream_sends_only_the_completion() -> None:
    chunks, completion = await run("text.echo", "hello world", stream=False)
    assert chunks == []
    assert completion.output == "hello world"
    assert completion.usage["chunks"] == 0


@pytest.mark.parametrize("value", [None, 3, 2.5, ["a"], {"text": "a"}, True])
async def test_echo_refuses_other_values(value: Any) -> None:
    with pytest.raises(SkillInputError, match=r"text\.echo takes a string or bytes"):
        await run("text.echo", value)


async def test_echo_refuses_oversized_input() -> None:
    with pytest.raises(SkillInputError, match=f"the limit is {MAX_TEXT_CHARS}"):
        await run("text.echo", "a" * (MAX_TEXT_CHARS + 1))


async def test_echo_cancelled_after_the_first_chunk() -> None:
    received: list[Any] = []
    execution = BuiltinBackend().execute(request("text.echo", "word " * 100))
    with trio.CancelScope() as scope:
        async with aclosing(execution) as items:
            async for item in items:
                received.append(item)
                scope.cancel()
    assert scope.cancelled_caught
    assert len(received) == 1
    assert isinstance(received[0], Chunk)


async def test_echo_stops_at_a_deadline_mid_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    received: list[Any] = []
    execution = BuiltinBackend().execute(request("text.echo", "word " * 100))
    with trio.move_on_after(2.5) as scope:
        async with aclosing(execution) as items:
            async for item in items:
                received.append(item)
                await trio.sleep(1)  # a slow consumer: one chunk per virtual second
    assert scope.cancelled_caught
    assert len(received) == 3
    assert all(isinstance(item, Chunk) for item in received)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)), st.integers(1, 40))
def test_echo_chunks_rebuild_the_input(data: str | bytes, size: int) -> None:
    chunks = list(echo_chunks(data, size))
    assert data[:0].join(chunks) == data  # type: ignore[arg-type]
    assert all(0 < len(chunk) <= size for chunk in chunks)


def _word_length_at(text: str, index: int) -> int:
    start = index
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = index
    while end < len(text) and not text[end].isspace():
        end += 1
    return end - start


@given(st.text(alphabet="ab \n\t", max_size=300))
def test_echo_chunks_only_cut_words_that_do_not_fit(text: str) -> None:
    boundary = 0
    for chunk in list(echo_chunks(text))[:-1]:
        boundary += len(chunk)
        inside_word = not text[boundary - 1].isspace() and not text[boundary].isspace()
        if inside_word:
            assert _word_length_at(text, boundary) > ECHO_CHUNK_CHARS


@given(st.text(max_size=200))
async def test_echo_roundtrips_through_the_backend(text: str) -> None:
    chunks, completion = await run("text.echo", text)
    assert "".join(chunks) == text
    assert completion.output == text
    assert completion.usage["chunks"] == len(chunks)


# --- math.eval ------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"), [("2*(3+4)", 14), ("7/2", 3.5), ("6/3", 2), ("2**63", 2**63)]
)
async def test_math_streams_the_result_as_one_chunk(expression: str, expected: float) -> None:
    chunks, completion = await run("math.eval", expression)
    assert chunks == [expected]
    assert completion.output == expected
    assert type(completion.output) is type(expected)
    assert completion.usage == {"input_chars": len(expression)}


async def test_math_without_stream() -> None:
    chunks, completion = await run("math.eval", "1 + 1", stream=False)
    assert chunks == []
    assert completion.output == 2


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"1+1", "math.eval takes an expression string, not bytes"),
        (42, "math.eval takes an expression string, not int"),
        ("1/0", "division by zero"),
        ("2**64", "more than a 64-bit integer can carry"),
        ("-(2**63) - 1", "more than a 64-bit integer can carry"),
    ],
)
async def test_math_refusals(value: Any, match: str) -> None:
    with pytest.raises(SkillInputError, match=match):
        await run("math.eval", value)


async def test_math_allows_the_whole_msgpack_integer_range() -> None:
    for expression, expected in [("2**64 - 1", 2**64 - 1), ("-(2**63)", -(2**63))]:
        _, completion = await run("math.eval", expression)
        assert completion.output == expected


# --- text.stats -----------------------------------------------------------


async def test_stats_simple_text() -> None:
    chunks, completion = await run("text.stats", "The cat sat. The cat ran!\nThe end?")
    assert chunks == []
    assert completion.output == {
        "chars": 34,
        "words": 8,
        "lines": 2,
        "sentences": 3,
        "unique_words": 5,
        "avg_word_length": 3.0,
        "top_words": [["the", 3], ["cat", 2], ["end", 1], ["ran", 1], ["sat", 1]],
        "reading_time_s": 2.4,
    }
    assert completion.usage == {"input_chars": 34}


def test_stats_contractions_hyphens_and_ellipses() -> None:
    assert text_stats("Don't panic! It's a well-known rule...  Really?\n\nYes.") == {
        "chars": 53,
        "words": 8,
        "lines": 3,
        "sentences": 4,
        "unique_words": 8,
        "avg_word_length": 4.75,
        "top_words": [["a", 1], ["don't", 1], ["it's", 1], ["panic", 1], ["really", 1]],
        "reading_time_s": 2.4,
    }


def test_stats_unicode_and_case() -> None:
    stats = text_stats("Café naïve CAFÉ. Pi is 3.14")
    assert stats["words"] == 6
    assert stats["sentences"] == 2
    assert stats["top_words"][0] == ["café", 2]


@pytest.mark.parametrize("text", ["", "...", "  \n "])
def test_stats_without_words(text: str) -> None:
    stats = text_stats(text)
    assert stats["words"] == stats["sentences"] == stats["unique_words"] == 0
    assert stats["avg_word_length"] == 0.0
    assert stats["top_words"] == []
    assert stats["reading_time_s"] == 0.0
    assert stats["chars"] == len(text)


async def test_stats_of_long_text_runs_off_the_event_loop() -> None:
    text = "Lorem ipsum dolor sit amet. " * 5000
    _, completion = await run("text.stats", text)
    assert completion.output == text_stats(text)
    assert completion.output["words"] == 25_000
    assert completion.output["reading_time_s"] == 7500.0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"text", "text.stats takes a string, not bytes"),
        (None, "text.stats takes a string, not NoneType"),
        ("a" * (MAX_TEXT_CHARS + 1), f"is {MAX_TEXT_CHARS + 1} characters long"),
    ],
)
async def test_stats_refusals(value: Any, match: str) -> None:
    with pytest.raises(SkillInputError, match=match):
        await run("text.stats", value)
