"""Checks of request options shared by the API's routes (llamanet's own and the
OpenAI-compatible ones), each a 400 with a message naming the option."""

from __future__ import annotations

from typing import Any, Final

MAX_TIMEOUT: Final = 3600.0
MAX_VERIFY: Final = 9


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def timeout_option(value: Any, default: float, name: str = "timeout") -> float:
    if value is None:
        return default
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be a number of seconds") from None
    if not 0 < timeout <= MAX_TIMEOUT:
        raise ApiError(400, f"{name} must be in (0, {MAX_TIMEOUT:.0f}] seconds")
    return timeout


def verify_option(value: Any, name: str = "'verify'") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_VERIFY:
        raise ApiError(400, f"{name} must be an integer 1..{MAX_VERIFY}")
    return value
