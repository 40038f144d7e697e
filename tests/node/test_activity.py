"""The node's record of tasks: trees, states and bounds, with no sockets."""

from __future__ import annotations

import string
from typing import Any

import pytest
import trio
import trio.lowlevel

from llamanet.node.activity import (
    CANCELLED,
    FAILED,
    MAX_TEXT,
    OK,
    RUNNING,
    Activity,
    state_of,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**bounds: int) -> tuple[Activity, Clock]:
    clock = Clock()
    return Activity(clock=clock, **bounds), clock


def shape(tree: dict[str, Any]) -> Any:
    """A tree as (kind, label or capability, state, children) for comparisons."""
    return (
        tree["kind"],
        tree["label"] or tree["capability"],
        tree["state"],
        [shape(c) for c in tree["children"]],
    )


def test_a_tracked_block_is_in_flight_then_recent_with_its_duration() -> None:
    activity, clock = make()
    with activity.track("ask", "math.eval", peer="12D3KooWpeer") as entry:
        clock.now += 0.25
        snapshot = activity.snapshot()
        assert [t["id"] for t in snapshot["in_flight"]] == [entry.id]
        assert snapshot["in_flight"][0]["state"] == RUNNING
        assert snapshot["in_flight"][0]["duration_ms"] == 250.0
        assert snapshot["recent"] == []
    clock.now += 10  # a finished task's duration no longer grows
    snapshot = activity.snapshot()
    assert snapshot["in_flight"] == []
    (done,) = snapshot["recent"]
    assert done == {
        "id": entry.id,
        "kind": "ask",
        "capability": "math.eval",
        "peer": "12D3KooWpeer",
        "label": "",
        "parent": None,
        "state": OK,
        "started_at": 1000.0,
        "duration_ms": 250.0,
        "error": "",
        "children": [],
        "omitted": 0,
    }


def test_entries_started_inside_a_block_hang_under_it() -> None:
    activity, _ = make()
    with activity.track("workflow", label="review"):
        for step in ("draft", "check"):
            with (
                activity.track("step", "text.echo", label=step),
                activity.track("ask", "text.echo"),
                activity.track("attempt", "text.echo", peer="a"),
            ):
                pass
        tree = activity.snapshot()["in_flight"]
        assert len(tree) == 1  # only the top of the tree is listed
    (workflow,) = activity.snapshot()["recent"]
    ask: Any = ("ask", "text.echo", OK, [("attempt", "text.echo", OK, [])])
    assert shape(workflow) == (
        "workflow",
        "review",
        OK,
        [("step", "draft", OK, [ask]), ("step", "check", OK, [ask])],
    )
    assert workflow["children"][0]["parent"] == workflow["id"]


def test_recent_is_newest_first() -> None:
    activity, _ = make()
    for name in ("first", "second", "third"):
        with activity.track("ask", label=name):
            pass
    assert [t["label"] for t in activity.snapshot()["recent"]] == ["third", "second", "first"]
    assert [t["label"] for t in activity.snapshot(recent=2)["recent"]] == ["third", "second"]
    assert activity.snapshot(recent=0)["recent"] == []


def test_a_failure_keeps_its_message_and_is_raised() -> None:
    activity, _ = make()
    with (
        pytest.raises(ValueError, match="no such peer"),
        activity.track("workflow", label="w"),
        activity.track("step", label="s"),
    ):
        raise ValueError("no such peer")
    (workflow,) = activity.snapshot()["recent"]
    assert workflow["state"] == FAILED
    assert workflow["error"] == "no such peer"
    assert workflow["children"][0]["state"] == FAILED
    with pytest.raises(KeyError), activity.track("step"):
        raise KeyError  # no message: the type names it
    assert activity.snapshot()["recent"][0]["error"] == "KeyError"


async def test_a_cancelled_block_is_cancelled_not_failed() -> None:
    activity, _ = make()
    with trio.move_on_after(0.01), activity.track("ask", "test.slow"):
        await trio.sleep(10)
    (entry,) = activity.snapshot()["recent"]
    assert entry["state"] == CANCELLED
    assert entry["error"] == ""


async def test_tasks_started_in_a_nursery_inherit_the_current_entry() -> None:
    activity, _ = make()

    async def copy(peer: str) -> None:
        with activity.track("ask", "math.eval", peer=peer):
            await trio.lowlevel.checkpoint()

    with activity.track("ask", "math.eval", label="verify 3"):
        async with trio.open_nursery() as nursery:
            for peer in ("a", "b", "c"):
                nursery.start_soon(copy, peer)
    (verified,) = activity.snapshot()["recent"]
    assert sorted(c["peer"] for c in verified["children"]) == ["a", "b", "c"]


def test_state_of_exceptions() -> None:
    assert state_of(ValueError("x")) == FAILED
    assert state_of(GeneratorExit()) == CANCELLED
    cancelled: list[BaseException] = []

    async def catch() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled as exc:
                cancelled.append(exc)
                raise

    trio.run(catch)
    assert state_of(cancelled[0]) == CANCELLED
    assert state_of(BaseExceptionGroup("", [cancelled[0], GeneratorExit()])) == CANCELLED
    assert state_of(BaseExceptionGroup("", [cancelled[0], ValueError()])) == FAILED


# --- parents ------------------------------------------------------------------------


def test_an_explicit_running_parent_wins_over_the_current_entry() -> None:
    activity, _ = make()
    served = activity.start("served", "test.relay", id="ab" * 16, ambient=False)
    with activity.track("workflow"):
        sub = activity.start("ask", "test.relay", parent=served.id)
    assert sub.parent == served.id
    assert served.children == [sub]


def test_an_unknown_parent_is_kept_as_a_reference_of_a_top_level_entry() -> None:
    activity, _ = make()
    # A served sub-task: its parent is a task on the requester.
    with activity.track("workflow"):
        entry = activity.start("served", parent="cd" * 16, ambient=False)
    assert entry.parent == "cd" * 16
    assert [e.id for e in activity.in_flight()] == [entry.id]


def test_without_ambient_the_current_entry_is_ignored() -> None:
    activity, _ = make()
    with activity.track("ask"):
        entry = activity.start("served", ambient=False)
    assert entry.parent is None
    assert entry in activity.in_flight()


def test_the_current_entry_of_another_activity_or_a_finished_one_is_ignored() -> None:
    ours, _ = make()
    theirs, _ = make()
    with theirs.track("ask"):
        assert ours.current() is None
        assert ours.start("ask").parent is None
    with ours.track("ask") as done:
        pass
    assert ours.current() is None
    entry = ours.start("ask", parent=done.id)
    assert entry.parent == done.id  # a reference only
    assert entry in ours.in_flight()


def test_ids_are_unique_while_running_and_local_ones_are_not_hex() -> None:
    activity, _ = make()
    first = activity.start("served", id="00" * 16)
    second = activity.start("served", id="00" * 16)  # a peer reused a task id
    assert first.id == "00" * 16
    assert second.id != first.id
    local = activity.start("ask")
    assert not set(local.id) <= set(string.hexdigits)
    assert len({first.id, second.id, local.id}) == 3


def test_finishing_twice_changes_nothing() -> None:
    activity, clock = make()
    entry = activity.start("ask")
    activity.finish(entry, OK)
    clock.now += 5
    activity.finish(entry, FAILED, error="late")
    (done,) = activity.snapshot()["recent"]
    assert (done["state"], done["error"], done["duration_ms"]) == (OK, "", 0.0)


def test_a_child_outliving_its_parent_stays_in_the_parents_tree() -> None:
    activity, _ = make()
    parent = activity.start("ask")
    child = activity.start("attempt", parent=parent.id)
    activity.finish(parent, FAILED, error="gave up")
    (tree,) = activity.snapshot()["recent"]
    assert tree["children"][0]["state"] == RUNNING
    activity.finish(child, CANCELLED)
    assert activity.snapshot()["recent"][0]["children"][0]["state"] == CANCELLED
    assert len(activity.snapshot()["recent"]) == 1


# --- bounds -------------------------------------------------------------------------


def test_recent_keeps_at_most_max_recent_trees() -> None:
    activity, _ = make(max_recent=3)
    for i in range(10):
        with activity.track("ask", label=str(i)):
            pass
    assert [t["label"] for t in activity.snapshot()["recent"]] == ["9", "8", "7"]


def test_recent_keeps_at_most_max_entries_but_always_the_newest_tree() -> None:
    activity, _ = make(max_entries=10)
    for i in range(3):
        with activity.track("workflow", label=str(i)):
            for _ in range(3):
                with activity.track("step"):
                    pass
    # Each tree has 4 entries: two fit in 10.
    assert [t["label"] for t in activity.snapshot()["recent"]] == ["2", "1"]
    with activity.track("workflow", label="big"):
        for _ in range(20):
            with activity.track("step"):
                pass
    assert [t["label"] for t in activity.snapshot()["recent"]] == ["big"]


def test_children_beyond_max_children_drop_the_oldest_finished_ones() -> None:
    activity, _ = make(max_children=3)
    with activity.track("workflow") as workflow:
        running = activity.start("step", label="long")
        for i in range(5):
            with activity.track("step", label=str(i)):
                pass
        labels = [c.label for c in workflow.children]
        assert labels == ["long", "3", "4"]  # the running step is never dropped
        assert workflow.omitted == 3
        activity.finish(running)
    (tree,) = activity.snapshot()["recent"]
    assert tree["omitted"] == 3


def test_running_entries_are_never_dropped() -> None:
    activity, _ = make(max_children=2)
    parent = activity.start("workflow")
    children = [activity.start("step", parent=parent.id) for _ in range(4)]
    assert parent.children == children
    assert parent.omitted == 0


def test_text_is_cut() -> None:
    activity, _ = make()
    long = "x" * (MAX_TEXT * 3)
    entry = activity.start("ask", long, peer=long, label=long)
    activity.finish(entry, FAILED, error=long)
    (done,) = activity.snapshot()["recent"]
    for key in ("capability", "peer", "label", "error"):
        assert len(done[key]) == MAX_TEXT
        assert done[key].endswith("…")


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Activity(clock=Clock(), max_recent=0)
