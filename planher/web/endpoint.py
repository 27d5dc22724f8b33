"""@endpoint: checks the caller, validates the query and body, serializes the answer."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from pydantic import (
    BaseModel,
    TypeAdapter,
    ValidationError,
)
from starlette.requests import Request
from starlette.responses import Response

from planher.errors import APIError
from planher.security.audit import audit
from planher.security.authentication import BEARER_CHALLENGE
from planher.security.rate_limits import rate_limited
from planher.web.request_errors import RequestValidationError


def rule_errors(problems: list[tuple[str, str]]) -> RequestValidationError:
    """A 422 for broken rules that span fields, as (field, message) pairs."""
    return RequestValidationError(
        [{"loc": (field,), "msg": message, "type": "value_error"} for field, message in problems],
        "body",
    )


def parse_query(request: Request, schema: type[BaseModel]) -> BaseModel:
    try:
        return schema.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise RequestValidationError(_errors_without_input(error), "query") from None


async def parse_body(request: Request, schema: type[BaseModel]) -> BaseModel:
    """The request's JSON body validated against `schema`: 400 if it is not JSON, 422 if it
    breaks a rule. An empty body counts as `{}`, so missing fields are named."""
    body = await request.body()
    try:
        return schema.model_validate_json(body or b"{}")
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise APIError(400, "malformed_body", "Request body is not valid JSON") from None
        raise RequestValidationError(_errors_without_input(error), "body") from None


def _errors_without_input(error: ValidationError) -> list[dict[str, Any]]:
    return error.errors(include_url=False, include_context=False, include_input=False)


async def parse_form(request: Request, schema: type[BaseModel]) -> BaseModel:
    try:
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
    except UnicodeDecodeError:
        raise APIError(400, "malformed_body", "Form body is not valid UTF-8") from None
    try:
        return schema.model_validate(form)
    except ValidationError as error:
        raise RequestValidationError(_errors_without_input(error), "body") from None


Handler = Callable[[Request], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class Operation:
    """What an endpoint takes and answers: the handler's contract and its OpenAPI entry."""

    summary: str
    ok_status: int
    ok_schema: Any  # a response model, list[model], or None for an empty body
    auth: str | None  # "user", "admin", or None for a public endpoint
    body: type[BaseModel] | None
    form: type[BaseModel] | None  # also accepted as a form (the OAuth2 password flow)
    query: type[BaseModel] | None
    errors: Mapping[int, str]  # the statuses it answers besides the shared ones
    media_type: str  # of the success response
    accepted: Any  # the 202 body of work that goes on in the background, if it can
    upload: str | None  # a file as the body: the media types it may come as


@dataclasses.dataclass(frozen=True)
class Reply:
    """A handler's answer when its status or headers are not the endpoint's usual ones;
    otherwise a handler returns the body alone (rows, dicts or models)."""

    body: Any
    status_code: int
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def endpoint(
    summary: str,
    *,
    ok: tuple[int, Any] = (200, None),
    auth: str | None = "user",
    body: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    errors: Mapping[int, str] | None = None,
    media_type: str = "application/json",
    accepted: type[BaseModel] | None = None,
    upload: str | None = None,
) -> Callable:
    """Declares an endpoint. The wrapper checks the caller (401, or 403 for a non-admin on
    an admin route), validates the query and body against the given models and passes them
    to the handler as `query=` and `body=`; the OpenAPI document is built from the same."""
    operation = Operation(
        summary, ok[0], ok[1], auth, body, form, query, errors or {}, media_type, accepted, upload
    )
    # The models that document the answers serialize them too.
    serializers = {} if ok[1] in (None, str) else {ok[0]: TypeAdapter(ok[1])}
    if accepted is not None:
        serializers[202] = TypeAdapter(accepted)

    def decorate(handler: Callable[..., Awaitable[Any]]) -> Handler:
        @functools.wraps(handler)
        async def checked(request: Request) -> Response:
            if auth is not None:
                await authorize(request, auth)
            arguments = {}
            if query is not None:
                arguments["query"] = parse_query(request, query)
            if form is not None and request.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                arguments["body"] = await parse_form(request, form)
            elif body is not None:
                arguments["body"] = await parse_body(request, body)
            answer = await handler(request, **arguments)
            if isinstance(answer, Response):
                return answer
            if not isinstance(answer, Reply):
                answer = Reply(answer, ok[0])
            serializer = serializers.get(answer.status_code) or serializers[ok[0]]
            return Response(
                serializer.dump_json(serializer.validate_python(answer.body)),
                status_code=answer.status_code,
                headers=dict(answer.headers),
                media_type="application/json",
            )

        checked.operation = operation
        return checked

    return decorate


async def authorize(request: Request, role: str) -> None:
    if not request.user.is_authenticated:
        raise APIError(401, request.user.code, request.user.reason, BEARER_CHALLENGE)
    retry_after = request.app.state.request_counter.retry_after(request.user.id, time.monotonic())
    if retry_after is not None:
        raise rate_limited(retry_after, "requests")
    if role == "admin" and request.user.account["role"] != "admin":
        await audit(request, "admin_denied", ok=False, target=request.url.path)
        raise APIError(403, "forbidden", "This needs an admin account")
