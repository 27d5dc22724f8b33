"""What can go wrong while a request is read: a broken rule, a body too large or too slow."""

from __future__ import annotations

from typing import Any


class RequestValidationError(Exception):
    """Input that parsed but broke a rule: answered 422 with FastAPI's error list."""

    def __init__(self, errors: list[dict[str, Any]], location: str) -> None:
        self.errors = [
            {"loc": [location, *error["loc"]], "msg": error["msg"], "type": error["type"]}
            for error in errors
        ]


class BodyTooLarge(Exception):
    """The request body grew past its limit (MAX_BODY_BYTES) while being read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.max_bytes = max_bytes


class RequestReadTimeout(Exception):
    """The request body did not arrive within REQUEST_READ_TIMEOUT_S."""
