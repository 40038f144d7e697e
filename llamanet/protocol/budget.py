"""A task's ``budget`` field and what a task costs: the keys a budget may hold, the
cap it puts on a model task's ``max_tokens``, and tokens and credits from a
result's ``usage`` at a record's ``price`` (credits per 1,000 tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

BUDGET_KEYS: Final = ("tokens", "credits")
"""What a ``budget`` limits (docs/PROTOCOL.md, "Delegation")."""


def capped_params(params: Mapping[str, Any], budget: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` with ``max_tokens`` no more than a token budget allows."""
    out = dict(params)
    tokens = (budget or {}).get("tokens")
    if isinstance(tokens, int | float) and not isinstance(tokens, bool):
        allowed = max(0, int(tokens))
        current = out.get("max_tokens")
        out["max_tokens"] = allowed if not isinstance(current, int) else min(current, allowed)
    return out


def tokens_used(usage: Mapping[str, Any]) -> float:
    """Prompt plus completion tokens of a result's ``usage`` (0 where absent)."""
    return float(usage.get("prompt_tokens", 0)) + float(usage.get("completion_tokens", 0))


def credits_for(tokens: float, price: float) -> float:
    """What ``tokens`` cost at ``price`` credits per 1,000 tokens."""
    return tokens / 1000 * price
