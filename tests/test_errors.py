"""``llamanet/errors.py`` holds every exception llamanet raises on purpose, and
its docstring draws all of them: one place to read what can go wrong."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import llamanet
from llamanet import errors
from llamanet.errors import LlamanetError


def llamanet_errors() -> set[type[LlamanetError]]:
    found: set[type[LlamanetError]] = set()
    for info in pkgutil.walk_packages(llamanet.__path__, "llamanet."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, LlamanetError):
                found.add(value)
    return found


def test_every_error_is_defined_in_errors_and_drawn_in_its_tree() -> None:
    classes = llamanet_errors()
    assert len(classes) > 40
    elsewhere = sorted(
        f"{c.__module__}.{c.__name__}" for c in classes if c.__module__ != errors.__name__
    )
    assert elsewhere == []
    tree = errors.__doc__ or ""
    assert (
        sorted(
            c.__name__ for c in classes if f"── {c.__name__}" not in tree and c is not LlamanetError
        )
        == []
    )
    for cls in classes:
        assert cls.__doc__, f"{cls.__name__} says when it is raised"
