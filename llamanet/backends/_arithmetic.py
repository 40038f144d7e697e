"""A safe arithmetic evaluator for the ``math.eval`` skill.

Expressions come from arbitrary peers, so ``eval`` is out of the question, and even
``ast.parse`` does its work (and its recursion) before we could look at the tree.  A
small tokenizer and a Pratt parser let us refuse oversized input before parsing,
refuse deep nesting while parsing, refuse huge powers before computing them, and
name the column of every error.

Numbers follow exact-where-possible rules:

* integer literals are ``int``; literals with ``.`` or an exponent (``2.5``, ``.5``,
  ``1e3``) are ``float``;
* ``+ - * // %`` on two ints give an int; any float operand gives a float;
* ``/`` on two ints gives an int when the division is exact (``6/3`` -> ``2``) and
  the correctly rounded float otherwise (``7/2`` -> ``3.5``);
* ``int ** int`` is exact for non-negative exponents and a float for negative ones
  (``2**-1`` -> ``0.5``), as in Python;
* ``sqrt`` of a perfect-square int is an int; ``floor``, ``ceil`` and one-argument
  ``round`` (half to even) give ints.

Bounds (see :class:`Limits`): every integer, intermediate or final, stays within
``max_int_bits``; a float that overflows, or an operation that would need one, is
refused.  With those bounds, every operation costs microseconds and the token
limit caps how many there are, so no input can hang the evaluator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, cast

from llamanet.errors import SkillInputError

Number: TypeAlias = int | float

DEFAULT_MAX_LENGTH: Final = 1000
DEFAULT_MAX_TOKENS: Final = 500
DEFAULT_MAX_DEPTH: Final = 64
DEFAULT_MAX_EXPONENT: Final = 10_000
DEFAULT_MAX_INT_BITS: Final = 10_000
# round(x, n) with an int x computes 10**|n|; 1000 digits is ~3300 bits.
_MAX_ROUND_DIGITS: Final = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What one expression may cost.  The defaults suit a calculator skill."""

    max_length: int = DEFAULT_MAX_LENGTH
    """Characters in the expression, checked before tokenizing."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Tokens in the expression; bounds the number of operations."""
    max_depth: int = DEFAULT_MAX_DEPTH
    """Nesting of sub-expressions: parentheses, calls, unary signs, ``**`` chains."""
    max_exponent: int = DEFAULT_MAX_EXPONENT
    """Largest ``|exponent|`` of an ``int ** int`` power."""
    max_int_bits: int = DEFAULT_MAX_INT_BITS
    """Largest bit length of any integer the evaluator produces."""

    def __post_init__(self) -> None:
        for name in ("max_length", "max_tokens", "max_depth", "max_exponent", "max_int_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS: Final = Limits()


def _error(message: str, column: int) -> SkillInputError:
    return SkillInputError(f"column {column}: {message}")


def _show(value: Number) -> str:
    """A short rendering for error messages; never converts a huge int to decimal."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<{value.bit_length()}-bit integer>"
    return repr(value)


# --- tokens ---------------------------------------------------------------

TokenKind: TypeAlias = Literal["number", "name", "op", "end"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    column: int
    """1-based position of the token's first character."""

    def describe(self) -> str:
        if self.kind == "end":
            return "end of expression"
        return repr(self.text) if self.kind == "op" else f"{self.kind} {self.text!r}"


# Alternatives are disjoint and unnested, so matching is linear in the input.
_TOKEN_RE: Final = re.compile(
    r"""
      (?P<space>[ \t\r\n]+)
    | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\*\*|//|[-+*/%(),])
    """,
    re.VERBOSE,
)
# What may not directly follow a number: "1e", "1.2.3" and "2pi" are typos, not
# two tokens.
_NUMBER_TAIL_RE: Final = re.compile(r"[A-Za-z0-9_.]+")
_CHARACTER_HINTS: Final = {"^": "; use ** for powers", "\u00d7": "; use * to multiply"}


def tokenize(expression: str, limits: Limits = DEFAULT_LIMITS) -> list[Token]:
    """Split ``expression`` into tokens ending with an ``end`` token."""
    if len(expression) > limits.max_length:
        raise SkillInputError(
            f"expression is {len(expression)} characters long; the limit is {limits.max_length}"
        )
    tokens: list[Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN_RE.match(expression, pos)
        if match is None:
            char = expression[pos]
            hint = _CHARACTER_HINTS.get(char, "")
            raise _error(f"unexpected character {char!r}{hint}", pos + 1)
        kind = match.lastgroup
        if kind == "number":
            tail = _NUMBER_TAIL_RE.match(expression, match.end())
            if tail is not None:
                raise _error(f"malformed number {expression[pos : tail.end()]!r}", pos + 1)
        if kind in ("number", "name", "op"):
            if len(tokens) == limits.max_tokens:
                raise _error(f"expression has more than {limits.max_tokens} tokens", pos + 1)
            tokens.append(Token(cast(TokenKind, kind), match.group(), pos + 1))
        pos = match.end()
    tokens.append(Token("end", "", len(expression) + 1))
    return tokens


# --- syntax tree ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Constant:
    value: Number
    column: int


@dataclass(frozen=True, slots=True)
class UnaryOp:
    op: str
    operand: Node
    column: int


@dataclass(frozen=True, slots=True)
class BinaryOp:
    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    column: int


Node: TypeAlias = Constant | UnaryOp | BinaryOp | Call


# --- functions and constants ----------------------------------------------


class _ArgumentError(Exception):
    """A function's arguments are outside its domain; becomes a SkillInputError that
    names the call."""


@dataclass(frozen=True, slots=True)
class _Function:
    min_args: int
    max_args: int | None
    apply: Callable[[Sequence[Number]], Number]

    def arity(self) -> str:
        if self.max_args is None:
            return f"at least {self.min_args} argument{'s' * (self.min_args != 1)}"
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' * (self.min_args != 1)}"
        return f"{self.min_args} to {self.max_args} arguments"


def _sqrt(args: Sequence[Number]) -> Number:
    (x,) = args
    if x < 0:
        raise _ArgumentError(f"square root of negative number {_show(x)}")
    if isinstance(x, int):
        root = math.isqrt(x)
        if root * root == x:
            return root
    return math.sqrt(x)


def _round(args: Sequence[Number]) -> Number:
    if len(args) == 1:
        return round(args[0])
    x, digits = args
    if not isinstance(digits, int):
        raise _ArgumentError(f"the number of digits must be an integer, got {_show(digits)}")
    if abs(digits) > _MAX_ROUND_DIGITS:
        raise _ArgumentError(f"the number of digits must be within ±{_MAX_ROUND_DIGITS}")
    return round(x, digits)


def _floor(args: Sequence[Number]) -> Number:
    return math.floor(args[0])


def _ceil(args: Sequence[Number]) -> Number:
    return math.ceil(args[0])


def _abs(args: Sequence[Number]) -> Number:
    return abs(args[0])


FUNCTIONS: Final[Mapping[str, _Function]] = MappingProxyType(
    {
        "abs": _Function(1, 1, _abs),
        "ceil": _Function(1, 1, _ceil),
        "floor": _Function(1, 1, _floor),
        "max": _Function(1, None, max),
        "min": _Function(1, None, min),
        "round": _Function(1, 2, _round),
        "sqrt": _Function(1, 1, _sqrt),
    }
)
CONSTANTS: Final[Mapping[str, float]] = MappingProxyType(
    {"e": math.e, "pi": math.pi, "tau": math.tau}
)


# --- parser ---------------------------------------------------------------

# Binding powers: higher binds tighter.  Unary signs sit between * and ** so that
# -2**2 == -(2**2) and 2**-1 parses, as in Python.
_INFIX_POWER: Final = {"+": 10, "-": 10, "*": 20, "/": 20, "//": 20, "%": 20, "**": 40}
_PREFIX_POWER: Final = 30
_RIGHT_ASSOCIATIVE: Final = frozenset({"**"})


class _Parser:
    def __init__(self, tokens: list[Token], limits: Limits) -> None:
        self._tokens = tokens
        self._pos = 0
        self._depth = 0
        self._limits = limits

    def parse(self) -> Node:
        node = self._expression(0)
        token = self._peek()
        if token.kind != "end":
            raise _error(f"unexpected {token.describe()}; expected an operator", token.column)
        return node

    def _peek(self) -> Token:
        return self._tokens[self._pos]

    def _advance(self) -> Token:
        token = self._tokens[self._pos]
        if token.kind != "end":
            self._pos += 1
        return token

    def _expression(self, min_power: int) -> Node:
        # Every recursion passes through here, so this one counter bounds the
        # Python stack for parentheses, calls, sign chains and ** chains alike.
        if self._depth == self._limits.max_depth:
            raise _error(
                f"expression is nested more than {self._limits.max_depth} levels deep",
                self._peek().column,
            )
        self._depth += 1
        try:
            left = self._prefix()
            while True:
                token = self._peek()
                power = _INFIX_POWER.get(token.text) if token.kind == "op" else None
                if power is None or power <= min_power:
                    return left
                self._advance()
                right_power = power - 1 if token.text in _RIGHT_ASSOCIATIVE else power
                left = BinaryOp(token.text, left, self._expression(right_power), token.column)
        finally:
            self._depth -= 1

    def _prefix(self) -> Node:
        token = self._advance()
        if token.kind == "number":
            return Constant(_literal(token, self._limits), token.column)
        if token.kind == "name":
            return self._name(token)
        if token.text in ("+", "-"):
            return UnaryOp(token.text, self._expression(_PREFIX_POWER), token.column)
        if token.text == "(":
            inner = self._expression(0)
            self._expect_close(token)
            return inner
        raise _error(
            f"unexpected {token.describe()}; expected a number, a name or '('", token.column
        )

    def _expect_close(self, opening: Token) -> None:
        token = self._advance()
        if token.text != ")":
            raise _error(
                f"expected ')' to close the '(' at column {opening.column}, "
                f"found {token.describe()}",
                token.column,
            )

    def _name(self, token: Token) -> Node:
        is_call = self._peek().text == "("
        if token.text in FUNCTIONS:
            if not is_call:
                raise _error(
                    f"{token.text} is a function; call it as {token.text}(...)", token.column
                )
            return self._call(token)
        if token.text in CONSTANTS:
            if is_call:
                raise _error(f"{token.text} is a constant, not a function", token.column)
            return Constant(CONSTANTS[token.text], token.column)
        known = ", ".join(sorted([*FUNCTIONS, *CONSTANTS]))
        raise _error(f"unknown name {token.text!r} (known: {known})", token.column)

    def _call(self, name: Token) -> Call:
        opening = self._advance()
        args: list[Node] = []
        if self._peek().text != ")":
            args.append(self._expression(0))
            while self._peek().text == ",":
                self._advance()
                args.append(self._expression(0))
        self._expect_close(opening)
        function = FUNCTIONS[name.text]
        too_many = function.max_args is not None and len(args) > function.max_args
        if len(args) < function.min_args or too_many:
            raise _error(f"{name.text}() takes {function.arity()}, got {len(args)}", name.column)
        return Call(name.text, tuple(args), name.column)


def _literal(token: Token, limits: Limits) -> Number:
    if token.text.isdigit():
        value: Number = int(token.text)
    else:
        value = float(token.text)
    return _checked(value, f"number {token.text!r}", token.column, limits)


def parse(expression: str, limits: Limits = DEFAULT_LIMITS) -> Node:
    """The syntax tree of ``expression``; raises :class:`SkillInputError` naming the
    column of the first problem."""
    tokens = tokenize(expression, limits)
    if tokens[0].kind == "end":
        raise SkillInputError("empty expression")
    return _Parser(tokens, limits).parse()


# --- evaluation -----------------------------------------------------------


def _checked(value: Number, what: str, column: int, limits: Limits) -> Number:
    """Refuse a non-finite float or an integer over the bit limit."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(f"{what} overflows a float", column)
    elif value.bit_length() > limits.max_int_bits:
        raise _error(
            f"{what} has {value.bit_length()} bits; the limit is {limits.max_int_bits}", column
        )
    return value


def _true_divide(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int):
        quotient, remainder = divmod(a, b)
        if remainder == 0:
            return quotient
    return a / b


def _power(a: Number, b: Number, column: int, limits: Limits) -> Number:
    if a == 0 and b < 0:
        raise _error("zero cannot be raised to a negative power", column)
    if isinstance(a, int) and isinstance(b, int):
        return _int_power(a, b, column, limits)
    if a < 0 and isinstance(b, float) and not b.is_integer():
        # Python would answer with a complex number.
        raise _error(f"negative number {_show(a)} raised to a fractional power", column)
    result: float = a**b
    return result


def _int_power(a: int, b: int, column: int, limits: Limits) -> Number:
    if abs(b) > limits.max_exponent:
        raise _error(
            f"exponent {_show(b)} is too large; integer powers allow at most "
            f"±{limits.max_exponent}",
            column,
        )
    if b < 0:
        return float(a) ** b
    if abs(a) > 1:
        # Estimate before computing: bit_length(a**b) is never below b * log2|a|.
        # The slack absorbs float rounding; the exact count is checked afterwards.
        bits = b * math.log2(abs(a))
        if bits > limits.max_int_bits + 1:
            raise _error(
                f"{_show(a)}**{b} would have about {bits:.0f} bits; "
                f"the limit is {limits.max_int_bits}",
                column,
            )
    result: int = a**b
    return result


_BINARY: Final[Mapping[str, Callable[[Number, Number], Number]]] = MappingProxyType(
    {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": _true_divide,
        "//": lambda a, b: a // b,
        "%": lambda a, b: a % b,
    }
)


class _Evaluator:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def evaluate(self, node: Node) -> Number:
        # Recursion depth follows the tree, which the parser already bounded.
        match node:
            case Constant(value=value):
                return value
            case UnaryOp(op=op, operand=operand):
                value = self.evaluate(operand)
                return -value if op == "-" else value
            case BinaryOp(op=op, left=left, right=right, column=column):
                return self._binary(op, self.evaluate(left), self.evaluate(right), column)
            case Call(name=name, args=args, column=column):
                return self._call(name, [self.evaluate(arg) for arg in args], column)

    def _binary(self, op: str, a: Number, b: Number, column: int) -> Number:
        what = f"result of '{op}'"
        try:
            result = _power(a, b, column, self._limits) if op == "**" else _BINARY[op](a, b)
        except ZeroDivisionError as exc:
            raise _error(f"division by zero in '{op}'", column) from exc
        except OverflowError as exc:
            raise _error(f"{what} is too large for a float", column) from exc
        return _checked(result, what, column, self._limits)

    def _call(self, name: str, args: list[Number], column: int) -> Number:
        what = f"result of {name}()"
        try:
            result = FUNCTIONS[name].apply(args)
        except _ArgumentError as exc:
            raise _error(f"{name}(): {exc}", column) from exc
        except OverflowError as exc:
            raise _error(f"{what} is too large for a float", column) from exc
        return _checked(result, what, column, self._limits)


def evaluate(expression: str, limits: Limits = DEFAULT_LIMITS) -> Number:
    """The value of an arithmetic expression such as ``"2 * (3 + 4) / sqrt(16)"``.

    Raises :class:`SkillInputError` for anything it will not compute: syntax errors,
    unknown names, division by zero, results out of bounds.
    """
    return _Evaluator(limits).evaluate(parse(expression, limits))
