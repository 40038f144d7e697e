"""Skills a node serves with no model server: deterministic, cheap and bounded.

They let a fresh node answer tasks at once, and give tests and simnet a worker
whose every answer is known in advance.

* ``text.echo`` streams its input back, ``math.eval`` evaluates arithmetic (see
  :mod:`llamanet.backends._arithmetic`), ``text.stats`` counts words and sentences.
* Chunks are sent only when the request asked to stream.  ``text.echo`` cuts its
  input after whitespace into chunks of at most :data:`ECHO_CHUNK_CHARS` characters
  (a longer word is cut where it must), so the chunks concatenate to the input;
  ``math.eval`` streams its result as one chunk; ``text.stats`` never streams.
* Inputs over :data:`MAX_TEXT_CHARS` characters are refused: these skills share
  the node's process with the protocol, so their cost must stay small.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import trio

from llamanet.backends._arithmetic import evaluate
from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.errors import SkillInputError, UnsupportedCapabilityError
from llamanet.protocol.records import ModelInfo

ECHO_CHUNK_CHARS: Final = 16
MAX_TEXT_CHARS: Final = 1 << 20
READING_WORDS_PER_MINUTE: Final = 200
TOP_WORDS: Final = 5
# Counting a mebibyte takes ~0.2 s; past this size it runs in a worker thread so
# the event loop keeps getting turns (and a cancelled task returns at once).
_INLINE_STATS_CHARS: Final = 1 << 16
# msgpack carries integers in [-2**63, 2**64); anything wider cannot be sent back.
_MSGPACK_INT_MIN: Final = -(1 << 63)
_MSGPACK_INT_MAX: Final = (1 << 64) - 1

_ECHO_PIECE_STR: Final = re.compile(r"\S*\s*")
_ECHO_PIECE_BYTES: Final = re.compile(rb"\S*\s*")
# A word may hold inner apostrophes and hyphens ("don't", "well-known"), and a
# number its decimal point or thousands separators ("3.14", "1,000").
_WORD_RE: Final = re.compile(r"\w+(?:(?:['\u2019-]|(?<=\d)[.,](?=\d))\w+)*")
# A sentence ends at a run of terminators followed by whitespace or the end, so
# "3.14" and "e.g. this" do not end one mid-token.
_SENTENCE_END_RE: Final = re.compile(r"[.!?]+(?=\s|$)")


Output = AsyncGenerator[Chunk | Completion, None]


@dataclass(frozen=True, slots=True)
class _Skill:
    description: str
    run: Callable[[TaskRequest], Output]


# --- text.echo ------------------------------------------------------------


def echo_chunks(data: str | bytes, size: int = ECHO_CHUNK_CHARS) -> Iterator[str | bytes]:
    """``data`` cut into pieces of at most ``size`` characters, each ending after
    whitespace where possible; joining the pieces gives back ``data``.  Lazy, so a
    long input is cut only as fast as it is sent."""
    for start, end in _chunk_spans(data, size):
        yield data[start:end]


def _chunk_spans(data: str | bytes, size: int) -> Iterator[tuple[int, int]]:
    pattern: re.Pattern[Any] = _ECHO_PIECE_STR if isinstance(data, str) else _ECHO_PIECE_BYTES
    start = 0  # where the chunk being filled begins
    for match in pattern.finditer(data):
        if match.end() - start <= size:
            continue
        if match.start() > start:
            yield start, match.start()
        # A word longer than a chunk is cut; its last 1..size characters stay
        # pending so they can share a chunk with the next word.
        cut = match.start() + (match.end() - match.start() - 1) // size * size
        for offset in range(match.start(), cut, size):
            yield offset, offset + size
        start = cut
    if start < len(data):
        yield start, len(data)


async def _run_echo(request: TaskRequest) -> Output:
    data = request.input
    if not isinstance(data, str | bytes):
        raise SkillInputError(f"text.echo takes a string or bytes, not {type(data).__name__}")
    _check_size(data, "text.echo")
    sent = 0
    if request.stream:
        for chunk in echo_chunks(data):
            # A checkpoint per chunk: a cancelled task stops mid-stream, and a long
            # input never holds the event loop for long.
            await trio.lowlevel.checkpoint()
            yield Chunk(chunk)
            sent += 1
    usage = {"input_chars": len(data), "output_chars": len(data), "chunks": sent}
    yield Completion(output=data, usage=usage)


# --- math.eval ------------------------------------------------------------


async def _run_math(request: TaskRequest) -> Output:
    expression = request.input
    if not isinstance(expression, str):
        raise SkillInputError(
            f"math.eval takes an expression string, not {type(expression).__name__}"
        )
    result = evaluate(expression)
    if isinstance(result, int) and not _MSGPACK_INT_MIN <= result <= _MSGPACK_INT_MAX:
        raise SkillInputError(
            f"the result has {result.bit_length()} bits, more than a 64-bit integer can "
            "carry; write a float literal (for example 2.0**100) for an approximate answer"
        )
    if request.stream:
        yield Chunk(result)
    yield Completion(output=result, usage={"input_chars": len(expression)})


# --- text.stats -----------------------------------------------------------


def text_stats(text: str) -> dict[str, Any]:
    """Counts for ``text``.  Words are runs of letters and digits (see ``_WORD_RE``),
    compared lowercase; sentences end at ``.``, ``!`` or ``?`` before whitespace."""
    words = [w.lower() for w in _WORD_RE.findall(text)]
    counts = Counter(words)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]
    return {
        "chars": len(text),
        "words": len(words),
        "lines": len(text.splitlines()),
        "sentences": sum(1 for s in _SENTENCE_END_RE.split(text) if _WORD_RE.search(s)),
        "unique_words": len(counts),
        "avg_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0.0,
        "top_words": [[word, count] for word, count in top],
        "reading_time_s": round(len(words) * 60 / READING_WORDS_PER_MINUTE, 1),
    }


async def _run_stats(request: TaskRequest) -> Output:
    text = request.input
    if not isinstance(text, str):
        raise SkillInputError(f"text.stats takes a string, not {type(text).__name__}")
    _check_size(text, "text.stats")
    if len(text) > _INLINE_STATS_CHARS:
        # trio-stubs (from trio-typing, which libp2p requires) shadow trio's own
        # annotations and predate the rename of ``cancellable``.
        stats = await trio.to_thread.run_sync(
            text_stats,
            text,
            abandon_on_cancel=True,  # type: ignore[call-arg]
        )
    else:
        stats = text_stats(text)
    yield Completion(output=stats, usage={"input_chars": len(text)})


def _check_size(data: str | bytes, skill: str) -> None:
    if len(data) > MAX_TEXT_CHARS:
        raise SkillInputError(
            f"{skill} input is {len(data)} characters long; the limit is {MAX_TEXT_CHARS}"
        )


# --- the backend ----------------------------------------------------------

_SKILLS: Final[Mapping[str, _Skill]] = MappingProxyType(
    {
        "math.eval": _Skill("evaluate an arithmetic expression, e.g. '2 * (3 + 4)'", _run_math),
        "text.echo": _Skill("stream the input text back unchanged", _run_echo),
        "text.stats": _Skill("count characters, words, lines and sentences", _run_stats),
    }
)

BUILTIN_SKILLS: Final[Mapping[str, str]] = MappingProxyType(
    {name: skill.description for name, skill in _SKILLS.items()}
)
"""Every built-in skill, by name, with a one-line description."""


class BuiltinBackend:
    """Serves the built-in skills (all of them, or the ones named in ``skills``)."""

    def __init__(self, skills: Sequence[str] | None = None) -> None:
        if isinstance(skills, str):
            raise TypeError("skills must be a sequence of skill names, not one string")
        chosen = set(_SKILLS if skills is None else skills)
        unknown = sorted(chosen - _SKILLS.keys())
        if unknown:
            raise ValueError(
                f"unknown built-in skill(s) {', '.join(unknown)}; available: {', '.join(_SKILLS)}"
            )
        # Table order, not argument order, so capabilities() is stable.
        self._skills = {name: skill for name, skill in _SKILLS.items() if name in chosen}

    @property
    def name(self) -> str:
        return "builtin"

    def capabilities(self) -> Sequence[str]:
        return tuple(self._skills)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> Output:
        skill = self._skills.get(request.capability)
        if skill is None:
            raise UnsupportedCapabilityError(
                f"capability {request.capability!r} is not served here; "
                f"this backend serves {', '.join(self._skills) or 'nothing'}"
            )
        async with aclosing(skill.run(request)) as items:
            async for item in items:
                yield item
