"""Hypothesis strategies for every message and record type."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from llamanet.errors import TASK_ERROR_CODES
from llamanet.protocol.messages import (
    ErrorMessage,
    Message,
    Receipt,
    RecordRequest,
    RecordResponse,
    TaskAccepted,
    TaskCancel,
    TaskChunk,
    TaskOffer,
    TaskRejected,
    TaskResult,
)

segment = st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True)
capabilities = st.lists(segment, min_size=1, max_size=4).map(".".join)

plain_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
str_maps = st.dictionaries(st.text(max_size=10), plain_values, max_size=4)
number_maps = st.dictionaries(
    st.text(max_size=10), st.integers(0, 2**40) | st.floats(0, 1e9), max_size=4
)
task_ids = st.binary(min_size=16, max_size=16)
codes = st.sampled_from(sorted(TASK_ERROR_CODES))
short_text = st.text(max_size=100)

offers = st.builds(
    TaskOffer,
    id=task_ids,
    cap=capabilities,
    input=plain_values,
    deadline=st.integers(1, 2**53),
    session=st.none() | st.text(min_size=1, max_size=20),
    parent=st.none() | task_ids,
    model=st.none()
    | st.fixed_dictionaries(
        {}, optional={"name": st.text(max_size=20), "min_ctx": st.integers(0, 10**6)}
    ),
    params=str_maps,
    depth=st.integers(0, 64),
    budget=st.none()
    | st.dictionaries(st.sampled_from(["tokens", "credits"]), st.integers(0, 10**6)),
    stream=st.booleans(),
)
receipts = st.builds(
    Receipt, time_ms=st.integers(0, 2**53), signature=st.binary(min_size=64, max_size=64)
)
results = st.builds(
    TaskResult,
    output=plain_values,
    receipt=receipts,
    usage=number_maps,
    model_digest=st.text(max_size=70),
)
messages: st.SearchStrategy[Message] = st.one_of(
    offers,
    st.builds(TaskAccepted),
    st.builds(
        TaskRejected, code=codes, msg=short_text, retry_after_ms=st.none() | st.integers(0, 10**6)
    ),
    st.builds(TaskChunk, seq=st.integers(0, 2**32), data=plain_values),
    results,
    st.builds(ErrorMessage, code=codes, msg=short_text),
    st.builds(TaskCancel, reason=short_text),
    st.builds(RecordRequest),
    st.builds(RecordResponse, record=st.binary(max_size=200)),
)
