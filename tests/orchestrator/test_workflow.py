"""Workflows as data: parsing, validation that lists every problem, templates."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from llamanet.errors import WorkflowError
from llamanet.orchestrator.workflow import load_workflow, parse_workflow, render

FOUR_STEPS = """
name = "fan-out"
output = "join"

[[steps]]
id = "start"
capability = "text.echo"

[[steps]]
id = "left"
capability = "test.left"
input = "{{start}}"

[[steps]]
id = "right"
capability = "test.right"
input = { text = "right of {{start}}", n = 2 }
model = { family = "llama" }
retries = 2
verify = 3

[[steps]]
id = "join"
aggregate = "concatenate"
inputs = ["left", "right"]
"""


def test_a_workflow_and_its_order() -> None:
    flow = parse_workflow(tomllib.loads(FOUR_STEPS))
    assert flow.name == "fan-out" and flow.output == "join"
    assert flow.order[0] == "start" and flow.order[-1] == "join"
    assert set(flow.order[1:3]) == {"left", "right"}
    right = flow.step("right")
    assert right.depends_on == {"start"} and (right.retries, right.verify) == (2, 3)
    assert right.model == {"family": "llama"}
    assert flow.step("join").depends_on == {"left", "right"}
    assert flow.capabilities() == {"text.echo", "test.left", "test.right"}


def test_toml_and_json_files(tmp_path: Path) -> None:
    toml_file = tmp_path / "flow.toml"
    toml_file.write_text(FOUR_STEPS)
    json_file = tmp_path / "flow.json"
    json_file.write_text(json.dumps(tomllib.loads(FOUR_STEPS)))
    assert load_workflow(toml_file) == load_workflow(json_file)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[steps]\n")
    with pytest.raises(WorkflowError, match="not valid toml"):
        load_workflow(broken)
    with pytest.raises(WorkflowError, match="cannot read"):
        load_workflow(tmp_path / "absent.toml")


def test_every_problem_is_listed_at_once() -> None:
    bad = {
        "output": "nowhere",
        "colour": "blue",
        "steps": [
            {"id": "a", "capability": "text.echo", "input": "{{b}} and {{ghost}}"},
            {"id": "b", "capability": "Not A Cap", "input": "{{a}}"},
            {"id": "a", "aggregate": "average", "inputs": ["a"]},
            {"id": "c", "capability": "x.y", "aggregate": "concatenate", "verify": 0},
            {"id": "d", "aggregate": "best", "inputs": ["a"]},
            {"id": "e", "capability": "x.y", "sparkle": True, "retries": -1},
            {"id": "f", "capability": "x.y", "market": "auction", "price_cap": -1},
        ],
    }
    with pytest.raises(WorkflowError) as info:
        parse_workflow(bad)
    problems = "\n".join(info.value.problems)
    for expected in (
        "unknown top-level key(s): colour",
        "step 'a' refers to unknown step 'ghost'",
        "'Not A Cap' is not a capability name",
        "step 'a' is defined twice",
        "aggregate must be one of concatenate, majority, best",
        "give exactly one of capability or aggregate",
        "verify must be an integer 1..9",
        "needs score = '<capability>'",
        "unknown key(s) sparkle",
        "retries must be an integer 0..10",
        "output 'nowhere' is not a step",
        "market must be 'cheapest' or 'fastest'",
        "price_cap must be a number >= 0",
    ):
        assert expected in problems
    assert len(info.value.problems) >= 11


def test_cycles_are_named() -> None:
    cyclic = {
        "steps": [
            {"id": "a", "capability": "text.echo", "input": "{{c}}"},
            {"id": "b", "capability": "text.echo", "input": "{{a}}"},
            {"id": "c", "capability": "text.echo", "after": ["b"]},
            {"id": "d", "capability": "text.echo"},
        ]
    }
    with pytest.raises(WorkflowError, match="steps a, b, c depend on each other in a cycle"):
        parse_workflow(cyclic)
    with pytest.raises(WorkflowError, match="refers to itself"):
        parse_workflow({"steps": [{"id": "a", "capability": "t.x", "input": "{{a}}"}]})


def test_templates() -> None:
    values = {"input": {"topic": "owls", "n": 3}, "facts": ["f1", "f2"], "text": "hello"}
    assert render("{{input}}", values) == {"topic": "owls", "n": 3}  # whole value
    assert render("{{ input.n }}", values) == 3
    assert render("About {{input.topic}}: {{facts}}", values) == 'About owls: ["f1", "f2"]'
    assert render({"m": ["{{text}}", "{{facts.1}}", 7]}, values) == {"m": ["hello", "f2", 7]}
    with pytest.raises(WorkflowError, match="no 'missing'"):
        render("{{input.missing}}", values)
