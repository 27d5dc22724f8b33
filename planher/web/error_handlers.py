"""Exception handlers: every error answered as {"detail", "code"}, never a 500 page."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from planher.web.error_responses import (
    REQUEST_READ_TIMEOUT_DETAIL,
    STANDARD_HEADERS,
    error_response,
)
from planher.web.request_errors import BodyTooLarge, RequestReadTimeout, RequestValidationError

# The code of an error raised without one (Starlette's own 404 and 405).
STATUS_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def http_error(request: Request, exc: HTTPException) -> Response:
    code = getattr(exc, "code", None) or STATUS_ERROR_CODES.get(exc.status_code, "not_found")
    return error_response(exc.status_code, code, exc.detail, exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(422, "validation_error", exc.errors)


async def body_too_large(request: Request, exc: BodyTooLarge) -> Response:
    return error_response(
        413, "body_too_large", f"Request body is larger than {exc.max_bytes} bytes"
    )


async def request_read_timeout(request: Request, exc: RequestReadTimeout) -> Response:
    # The rest of the body may still be on its way: the connection cannot serve another.
    return error_response(
        408, "request_timeout", REQUEST_READ_TIMEOUT_DETAIL, {"Connection": "close"}
    )


async def server_error(request: Request, exc: Exception) -> Response:
    # Runs outside the other middleware, so it sets the standard headers itself.
    return error_response(500, "internal_error", "Internal server error", STANDARD_HEADERS)
