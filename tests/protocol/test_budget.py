"""A task's budget field and what a task costs."""

from __future__ import annotations

from llamanet.protocol.budget import BUDGET_KEYS, capped_params, credits_for, tokens_used


def test_a_token_budget_caps_max_tokens_and_nothing_else() -> None:
    assert capped_params({"temperature": 0}, {"tokens": 50.7}) == {
        "temperature": 0,
        "max_tokens": 50,
    }
    assert capped_params({"max_tokens": 20}, {"tokens": 50}) == {"max_tokens": 20}
    assert capped_params({"max_tokens": 80}, {"tokens": -3}) == {"max_tokens": 0}
    assert capped_params({"max_tokens": 80}, {"credits": 1}) == {"max_tokens": 80}
    assert capped_params({}, {"tokens": True}) == {}
    assert capped_params({}, None) == {}
    assert BUDGET_KEYS == ("tokens", "credits")


def test_tokens_and_credits_from_usage_and_a_price_per_thousand() -> None:
    usage = {"prompt_tokens": 300, "completion_tokens": 200, "exec_ms": 12}
    assert tokens_used(usage) == 500.0
    assert tokens_used({}) == 0.0
    assert credits_for(500.0, 2.0) == 1.0
    assert credits_for(500.0, 0.0) == 0.0
