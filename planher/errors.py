"""APIError and the error codes: every error body is {"detail": …, "code": …}."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException

# Every error body is {"detail": …, "code": …}: `detail` for people, `code` for programs.
ERROR_CODES = {
    "malformed_body": "400: the body is not valid JSON (or form data)",
    "not_authenticated": "401: no Bearer access token was sent",
    "invalid_token": "401: the token is malformed, tampered with or of the wrong kind",
    "token_expired": "401: the token has expired (refresh the access token)",
    "token_revoked": "401: the token's login has ended (logout, password change, theft)",
    "refresh_token_reused": "401: a used refresh token came back: the login was ended",
    "wrong_credentials": "401: incorrect email or password",
    "forbidden": "403: this needs an admin account",
    "wrong_password": "403: current_password is incorrect",
    "not_found": "404: no such thing, or not hers",
    "method_not_allowed": "405: the path does not take this method",
    "request_timeout": "408: the request did not arrive within REQUEST_READ_TIMEOUT_S",
    "email_taken": "409: an account with this email already exists",
    "period_overlap": "409: the period overlaps one already logged",
    "mood_exists": "409: a mood is already logged for that date",
    "observation_exists": "409: an observation is already logged for that date",
    "nothing_to_predict_from": "409: a prediction needs a logged period or a profile",
    "not_enough_data": "409: training needs more logged days",
    "body_too_large": "413: the body is over MAX_BODY_BYTES (IMPORT_MAX_BYTES for an import)",
    "file_too_large": "413: an imported file unpacks to more than IMPORT_MAX_UNPACKED_BYTES",
    "unknown_format": "422: the imported file is in none of the formats PlanHer reads",
    "malformed_file": "422: the imported file breaks its format; `detail` says where",
    "validation_error": "422: a field breaks a rule; `detail` lists them",
    "rate_limited": "429: too many requests; wait Retry-After seconds",
    "internal_error": "500: a bug of ours",
    "database_unavailable": "503: the database cannot serve now; retry after Retry-After",
    "shutting_down": "503 (readiness only): this instance is stopping; send to another",
}


class APIError(HTTPException):
    """An error a client can act on: its status, its ERROR_CODES `code`, and a `detail` a
    person understands (never an API path or an internal)."""

    def __init__(
        self, status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        assert code in ERROR_CODES, code
        super().__init__(status_code, detail=detail, headers=dict(headers or {}))
        self.code = code
