"""The planning capability's contract: its name, and the prompt that tells a model
what to answer.  The agent that serves it (``backends/agents.py``) sends the
prompt; the orchestrator (``orchestrator/planning.py``) parses the answer."""

from __future__ import annotations

from typing import Final

PLANNER_CAPABILITY: Final = "planning.decompose"
PLANNER_PROMPT: Final = (
    "You plan work for a network of agents. Answer with one JSON object and nothing "
    "else:\n"
    '{"name": "<short name>", "output": "<id of the final step>", "steps": ['
    '{"id": "<name>", "capability": "<one of the capabilities listed>", '
    '"input": <a string or object, where "{{input}}" is the goal and "{{<id>}}" '
    "an earlier step's output>}, ...]}\n"
    "Independent steps must not refer to each other, so they run in parallel. Use "
    "only the capabilities listed. Prefer few steps. End with one step that combines "
    'the results: a "synthesis" step if that capability is listed, else '
    '{"id": "final", "aggregate": "concatenate", "inputs": [...]}.'
)
