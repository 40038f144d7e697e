from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from typing import Any, TypeAlias

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from llamanet.backends._arithmetic import (
    DEFAULT_MAX_INT_BITS,
    Limits,
    Number,
    evaluate,
    tokenize,
)
from llamanet.errors import BackendError, SkillInputError

# Every refusal must come back well within this, on any input.
QUICK_SECONDS = 0.5


def refused_quickly(expression: str, match: str, limits: Limits | None = None) -> None:
    started = time.perf_counter()
    with pytest.raises(SkillInputError, match=match):
        evaluate(expression, limits) if limits else evaluate(expression)
    assert time.perf_counter() - started < QUICK_SECONDS


# --- values and types -----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2*(3+4)", 14),
        ("7/2", 3.5),
        ("6/3", 2),
        ("-6/3", -2),
        ("0/5", 0),
        ("1/3", 1 / 3),
        ("10//3", 3),
        ("-7//2", -4),
        ("-7%3", 2),
        ("7.5//2", 3.0),
        ("2.5", 2.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-2**2", -4),
        ("(-2)**2", 4),
        ("2**-1", 0.5),
        ("2**3**2", 512),
        ("-+-3", 3),
        ("1 - 2 - 3", -4),
        ("2 * 3 + 4 * 5", 26),
        ("100 // 7 % 4", 2),
        ("2**9999 // 2**9998", 2),
        ("abs(-3)", 3),
        ("abs(-2.5)", 2.5),
        ("max(1, 2.5, -3)", 2.5),
        ("min(4, 2, 9)", 2),
        ("round(2.5)", 2),
        ("round(3.5)", 4),
        ("round(3.14159, 2)", 3.14),
        ("round(1234, -2)", 1200),
        ("sqrt(16)", 4),
        ("sqrt(2)", math.sqrt(2)),
        ("sqrt(2.25)", 1.5),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("pi", math.pi),
        ("2 * e", 2 * math.e),
        ("tau / 2", math.pi),
        (" \t1\n+\r\n2 ", 3),
        ("1e-400", 0.0),
    ],
)
def test_values(expression: str, expected: Number) -> None:
    result = evaluate(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_exact_integers_stay_exact() -> None:
    assert evaluate("3**100 + 1") == 3**100 + 1
    assert evaluate("sqrt(3**200)") == 3**100
    assert evaluate("(2**200) / (2**190)") == 1024


# --- syntax errors name the column ----------------------------------------


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("1 2", r"column 3: unexpected number '2'"),
        ("1)", r"column 2: unexpected '\)'"),
        ("(1+2", r"column 5: expected '\)' to close the '\(' at column 1, found end"),
        ("1+", "column 3: unexpected end of expression"),
        ("*2", r"column 1: unexpected '\*'"),
        ("2^3", r"column 2: unexpected character '\^'; use \*\* for powers"),
        ("2 # 3", "column 3: unexpected character '#'"),
        ("1.2.3", "column 1: malformed number '1.2.3'"),
        ("2pi", "column 1: malformed number '2pi'"),
        ("1e", "column 1: malformed number '1e'"),
        ("x + 1", "column 1: unknown name 'x'"),
        ("__import__(os)", "unknown name '__import__'"),
        ("'1'", "column 1: unexpected character"),
        ("sqrt", r"column 1: sqrt is a function; call it as sqrt\(...\)"),
        ("pi(2)", "column 1: pi is a constant"),
        ("max()", r"column 1: max\(\) takes at least 1 argument, got 0"),
        ("1 + round(1, 2, 3)", r"column 5: round\(\) takes 1 to 2 arguments, got 3"),
        ("sqrt(1, 2)", r"sqrt\(\) takes 1 argument, got 2"),
        ("max(1,)", r"column 7: unexpected '\)'"),
        ("1,2", "column 2: unexpected ','"),
        ("\uff12", "unexpected character"),  # a fullwidth digit
    ],
)
def test_syntax_errors(expression: str, match: str) -> None:
    with pytest.raises(SkillInputError, match=match):
        evaluate(expression)


def test_errors_are_bad_requests() -> None:
    with pytest.raises(SkillInputError) as info:
        evaluate("1/0")
    assert isinstance(info.value, BackendError)
    assert info.value.code == "bad_request"


# --- domain errors and bounds ---------------------------------------------


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("1/0", "column 2: division by zero in '/'"),
        ("1 // 0", "column 3: division by zero in '//'"),
        ("1 % (2 - 2)", "column 3: division by zero in '%'"),
        ("1.5 / 0.0", "division by zero"),
        ("0**-1", "column 2: zero cannot be raised to a negative power"),
        ("0.0**-2.5", "zero cannot be raised to a negative power"),
        ("(-8)**(1/3)", "column 5: negative number -8 raised to a fractional power"),
        ("sqrt(-1)", r"column 1: sqrt\(\): square root of negative number -1"),
        ("round(1.5, 2.0)", "number of digits must be an integer"),
        ("round(1, 5000)", "number of digits must be within"),
        ("1e400", "column 1: number '1e400' overflows a float"),
        ("1e308 * 10", r"column 7: result of '\*' overflows a float"),
        ("10.0**400", r"result of '\*\*' is too large for a float"),
        ("2**5000 + 0.5", "result of '[+]' is too large for a float"),
        ("2**5000 / 3", "result of '/' is too large for a float"),
        ("sqrt(3**999)", r"result of sqrt\(\) is too large for a float"),
        # Right-associative: 9**(9**(9**9)); the second ** is the one refused.
        ("9**9**9**9", r"column 5: exponent 387420489 is too large"),
        ("10**100000", r"exponent 100000 is too large; integer powers allow at most ±10000"),
        ("2**-100000", "exponent -100000 is too large"),
        ("3**9000", r"3\*\*9000 would have about 14265 bits; the limit is 10000"),
        ("2**10000", r"result of '\*\*' has 10001 bits"),
        ("2**9000 * 2**9000", r"result of '\*' has 18001 bits"),
        ("(2**9999) ** 2", "would have about"),
        ("(" * 65 + "1" + ")" * 65, "nested more than 64 levels deep"),
        ("-" * 100 + "1", "nested more than 64 levels deep"),
        ("2" + "**2" * 80, "nested more than 64 levels deep"),
        ("sqrt(" * 70 + "1" + ")" * 70, "nested more than 64 levels deep"),
        ("1+" * 300 + "1", "column 501: expression has more than 500 tokens"),
        ("1" * 1001, "expression is 1001 characters long; the limit is 1000"),
        ("1" + " " * 5000, "expression is 5001 characters long"),
    ],
)
def test_refusals_are_quick_and_specific(expression: str, match: str) -> None:
    refused_quickly(expression, match)


def test_bounds_allow_the_largest_legal_values() -> None:
    assert evaluate("2**9999") == 2**9999
    assert evaluate("(" * 63 + "1" + ")" * 63) == 1
    assert evaluate("+".join(["1"] * 250)) == 250
    assert evaluate("1" + " " * 999) == 1


def test_custom_limits() -> None:
    small = Limits(max_length=20, max_tokens=5, max_depth=3, max_exponent=10, max_int_bits=16)
    assert evaluate("2**10", small) == 1024
    assert evaluate("1+2+3", small) == 6
    refused_quickly("1+2+3+4", "more than 5 tokens", small)
    refused_quickly("--+-1", "nested more than 3", small)
    refused_quickly("2**11", "exponent 11 is too large", small)
    refused_quickly("300*300", "has 17 bits; the limit is 16", small)
    refused_quickly("1" * 21, "the limit is 20", small)


@pytest.mark.parametrize("field", ["max_length", "max_tokens", "max_depth", "max_int_bits"])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_validate(field: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: bad})


def test_tokens_carry_columns() -> None:
    tokens = tokenize(" 12 **(x)")
    assert [(t.kind, t.text, t.column) for t in tokens] == [
        ("number", "12", 2),
        ("op", "**", 5),
        ("op", "(", 7),
        ("name", "x", 8),
        ("op", ")", 9),
        ("end", "", 10),
    ]


# --- properties -----------------------------------------------------------


def _never_hangs_or_escapes(expression: str) -> None:
    started = time.perf_counter()
    try:
        result = evaluate(expression)
    except SkillInputError:
        pass
    else:
        assert isinstance(result, int | float)
        assert not isinstance(result, float) or math.isfinite(result)
    assert time.perf_counter() - started < QUICK_SECONDS


@given(st.text(max_size=1200))
def test_arbitrary_text_only_raises_skill_input_error(expression: str) -> None:
    _never_hangs_or_escapes(expression)


_PIECES = [
    *"0123456789",
    "99999",
    "1e308",
    "2.5",
    ".5",
    "e",
    "pi",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "**",
    "(",
    ")",
    ",",
    " ",
    "sqrt(",
    "round(",
    "max(",
    "floor(",
    "abs(",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=300).map("".join))
def test_token_soup_only_raises_skill_input_error(expression: str) -> None:
    _never_hangs_or_escapes(expression)


# A generated integer expression: a literal, ("neg", x), or (op, left, right).
Tree: TypeAlias = int | tuple[Any, ...]

_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


def _extend(children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "//", "%"]), children, children),
        st.tuples(st.just("**"), children, st.integers(0, 3)),
        st.tuples(st.just("neg"), children),
    )


trees = st.recursive(st.integers(0, 10**6), _extend, max_leaves=12)


def _render(tree: Tree) -> str:
    if isinstance(tree, int):
        return str(tree)
    if tree[0] == "neg":
        return f"(-{_render(tree[1])})"
    op, left, right = tree
    return f"({_render(left)} {op} {_render(right)})"


def _depth(tree: Tree) -> int:
    return 0 if isinstance(tree, int) else 1 + max(_depth(child) for child in tree[1:])


class _Refused(Exception):
    pass


def _oracle(tree: Tree) -> int:
    """Python's own arithmetic on the tree, refusing what the evaluator must refuse."""
    if isinstance(tree, int):
        return tree
    if tree[0] == "neg":
        return -_oracle(tree[1])
    op, left, right = tree
    a, b = _oracle(left), _oracle(right)
    if op == "**" and abs(a) > 1 and b * math.log2(abs(a)) > DEFAULT_MAX_INT_BITS + 1:
        raise _Refused
    try:
        value = _OPS[op](a, b)
    except ZeroDivisionError:
        raise _Refused from None
    if value.bit_length() > DEFAULT_MAX_INT_BITS:
        raise _Refused
    return value


@given(trees)
def test_integer_trees_match_python(tree: Tree) -> None:
    assume(_depth(tree) <= 20)
    expression = _render(tree)
    try:
        expected = _oracle(tree)
    except _Refused:
        with pytest.raises(SkillInputError):
            evaluate(expression)
        return
    result = evaluate(expression)
    assert result == expected
    assert type(result) is int


@st.composite
def flat_expressions(draw: st.DrawFn) -> str:
    """Unparenthesized chains, so precedence and associativity decide the value."""

    def atom() -> str:
        return draw(st.sampled_from(["", "-", "+"])) + str(draw(st.integers(0, 50)))

    parts = [atom()]
    powers = 0
    for _ in range(draw(st.integers(0, 8))):
        # Two ** at most keeps Python's own answer (the oracle) small and quick.
        if powers < 2 and draw(st.booleans()):
            powers += 1
            parts += ["**", draw(st.sampled_from(["", "-"])) + str(draw(st.integers(0, 3)))]
        else:
            parts += [draw(st.sampled_from(["+", "-", "*", "//", "%"])), atom()]
    return " ".join(parts)


@given(flat_expressions())
def test_precedence_matches_python(expression: str) -> None:
    try:
        expected = eval(expression, {"__builtins__": {}})  # the oracle, on generated input only
    except ZeroDivisionError:
        with pytest.raises(SkillInputError, match=r"division by zero|zero cannot be raised"):
            evaluate(expression)
        return
    result = evaluate(expression)
    assert result == expected
    assert type(result) is type(expected)
