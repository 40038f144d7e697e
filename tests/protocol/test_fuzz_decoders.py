"""Arbitrary input to the decoders added with market mode, workflows and model
files: each raises only its own typed error, never anything else."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from llamanet.backends.model_files import read_gguf_info
from llamanet.errors import DecodeError, ModelFileError, WorkflowError
from llamanet.orchestrator.workflow import parse_workflow, render
from llamanet.protocol.bids import CallForProposals, decode_bid_message, encode_bid_message
from llamanet.protocol.codec import pack_value

# What msgpack can carry: 64-bit integers.
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
json_values = st.recursive(
    scalars | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
step_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | st.sampled_from(["a", "b", "c", "input"]),
        "capability": st.sampled_from(["text.echo", "math.eval", "Bad Cap", ""]) | json_values,
        "aggregate": st.sampled_from(["concatenate", "majority", "best", "avg"]),
        "inputs": st.lists(st.sampled_from(["a", "b", "c", "zz"]), max_size=3) | json_values,
        "input": st.sampled_from(["{{input}}", "{{a}}", "{{b.x}}", "{{c}} and {{a}}"])
        | json_values,
        "retries": json_values,
        "verify": json_values,
        "market": json_values,
        "after": json_values,
    },
)


@given(st.binary(max_size=300))
def test_bid_decoder_raises_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_bid_message(data)


@given(st.dictionaries(st.sampled_from(["t", "id", "cap", "cfp", "sig", "bid"]), json_values))
def test_bid_decoder_on_maps(fields: dict[str, object]) -> None:
    with contextlib.suppress(DecodeError):
        decode_bid_message(pack_value(fields))


@given(
    st.binary(min_size=16, max_size=16),
    st.sampled_from(["text.echo", "llm.chat"]),
    st.text(max_size=50),
    st.integers(1, 2**40),
)
def test_calls_for_proposals_round_trip(cfp_id: bytes, cap: str, summary: str, ms: int) -> None:
    cfp = CallForProposals(id=cfp_id, cap=cap, summary=summary, bid_deadline=ms, task_deadline=ms)
    assert decode_bid_message(encode_bid_message(cfp)) == cfp


@given(st.lists(step_like, max_size=5) | json_values, json_values)
def test_workflow_validation_raises_only_workflow_errors(steps: object, output: object) -> None:
    problems: list[str] = []
    try:
        workflow = parse_workflow({"steps": steps, "output": output})
    except WorkflowError as exc:
        problems = exc.problems
    if problems:
        return
    values = {"input": "x", **{s.id: {"x": 1} for s in workflow.steps}}
    for step in workflow.steps:
        with contextlib.suppress(WorkflowError):
            render(step.input, values)


@given(st.binary(max_size=400))
def test_gguf_reader_raises_only_model_file_errors(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".gguf") as file:
        file.write(b"GGUF" + data if data[:1] == b"\x00" else data)
        file.flush()
        with contextlib.suppress(ModelFileError):
            read_gguf_info(Path(file.name))
