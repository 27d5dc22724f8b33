"""The error body and the headers every answer carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from planher.security.authentication import BEARER_CHALLENGE

# Health data must never sit in a browser's or proxy's cache.
STANDARD_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error_response(
    status_code: int, code: str, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status_code == 401:
        headers.update(BEARER_CHALLENGE)
    return JSONResponse({"detail": detail, "code": code}, status_code=status_code, headers=headers)


REQUEST_READ_TIMEOUT_DETAIL = "The request did not arrive in time; send it again, faster"
