"""The OpenAPI 3.1 document, built from the operations that @endpoint declares."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    TypeAdapter,
)
from starlette.routing import Route

from planher.config import MAX_DATABASE_ID, __version__
from planher.schemas.fields import CervicalMucus, LhTest
from planher.schemas.responses import (
    EnergyLabel,
    EnergyLevelOut,
    ErrorCode,
    ErrorOut,
    ImportFormat,
    ModelSource,
    ModelType,
    OvulationEvidence,
    Phase,
    ValidationErrorOut,
)
from planher.web.endpoint import Operation

# Each a component of its own in the document (one type in a generated client, not one per
# field that uses it).
DOCUMENTED_ENUMS = {
    "EnergyLevel": EnergyLevelOut,
    "EnergyLabel": EnergyLabel,
    "Phase": Phase,
    "ModelSource": ModelSource,
    "ModelType": ModelType,
    "Role": Literal["user", "admin"],
    "ErrorCode": ErrorCode,
    "LhTest": LhTest,
    "CervicalMucus": CervicalMucus,
    "OvulationEvidence": OvulationEvidence,
    "ImportFormat": ImportFormat,
}
# HTTP requires the challenge on every 401, whoever declares it.
WWW_AUTHENTICATE_HEADER = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
}


def _defaults_described(schema: dict[str, Any]) -> dict[str, Any]:
    """A request schema without `default`s: a field that may be left out is simply not
    required, and the value the server then uses is said in words. (Generators such as
    openapi-typescript take a `default` to mean the field is always there, and a
    `default: null` on a field that refuses null contradicts itself.)"""
    for field in schema.get("properties", {}).values():
        if "default" in field and (default := field.pop("default")) is not None:
            said = f"Left out: {json.dumps(default)}."
            field["description"] = (
                f"{field['description']} {said}" if "description" in field else said
            )
    return schema


def _schema_reference(annotation: Any, mode: str, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a model or list of models, its models moved to `components`;
    request schemas (mode `validation`) carry no defaults."""
    schema = TypeAdapter(annotation).json_schema(
        mode=mode, ref_template="#/components/schemas/{model}"
    )
    components.update(schema.pop("$defs", {}))
    if mode == "validation":
        _defaults_described(schema)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        components[annotation.__name__] = schema
        return {"$ref": f"#/components/schemas/{annotation.__name__}"}
    return schema


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
}
# On every answer: the request's id, the client's own when it sent a sane one.
REQUEST_ID_HEADERS = {
    "X-Request-ID": {
        "description": "This request's id, on every log line written for it: the client's "
        "X-Request-ID when it is 1-128 letters, digits or . _ : -, else a new one",
        "schema": {"type": "string"},
    }
}


class _Responses:
    """One operation's `responses`, in the order the document lists them."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components
        self.error = self.reference(ErrorOut)
        self.by_status: dict[str, Any] = {}

    def reference(self, annotation: Any) -> dict[str, Any]:
        return _schema_reference(annotation, "serialization", self.components)

    def answer(
        self, status: int, description: str, schema: dict[str, Any] | None = None, **extra: Any
    ) -> None:
        """An answer whose body is `schema`, by default the error body."""
        headers = {
            **REQUEST_ID_HEADERS,
            **(WWW_AUTHENTICATE_HEADER if status == 401 else {}),
            **extra.pop("headers", {}),
        }
        self.by_status[str(status)] = {
            "description": description,
            "headers": headers,
            **extra,
            "content": _json_content(self.error if schema is None else schema),
        }

    def success(self, status: int, description: str, operation: Operation) -> None:
        answer: dict[str, Any] = {"description": description, "headers": dict(REQUEST_ID_HEADERS)}
        if operation.ok_schema is not None:
            schema = self.reference(operation.ok_schema)
            answer["content"] = {operation.media_type: {"schema": schema}}
        if typing.get_origin(operation.ok_schema) is list:
            answer["headers"] |= {
                "X-Total-Count": {
                    "description": "How many items match, on every page",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        self.by_status[str(status)] = answer

    def validation_error(self, description: str, also_an_error: bool = False) -> None:
        schema = self.reference(ValidationErrorOut)
        self.answer(422, description, {"anyOf": [schema, self.error]} if also_an_error else schema)


def _declared_answers(responses: _Responses, operation: Operation) -> None:
    """The success and the errors the endpoint declares itself."""
    for status, description in [(operation.ok_status, "Success"), *operation.errors.items()]:
        if status < 300:
            responses.success(status, description, operation)
        elif status == 422:  # its own 422s besides the validation errors
            responses.validation_error(description, also_an_error=True)
        else:
            responses.answer(status, description)
    if operation.accepted is not None:
        responses.answer(
            202,
            "Accepted: the work goes on in the background",
            responses.reference(operation.accepted),
        )


def _access_answers(responses: _Responses, operation: Operation, path: str) -> None:
    """Who may call it, and on whose rows."""
    if operation.auth is not None:
        responses.answer(401, "Missing, invalid, expired or revoked token")
    if operation.auth == "admin":
        responses.answer(403, "Not an admin")
    if "{id}" in path and 404 not in operation.errors:
        responses.answer(404, "Not found, or not hers")


def _input_answers(responses: _Responses, operation: Operation) -> None:
    """What a request that cannot be read or breaks a rule gets."""
    if operation.body is not None:
        responses.answer(400, "Malformed JSON")
        responses.answer(413, "Body over 1 MiB")
    if operation.upload is not None:
        responses.answer(400, "Malformed multipart form")
    validated = operation.body is not None or operation.query is not None
    if validated and 422 not in operation.errors:
        responses.validation_error("Validation error")


def _unavailable_answers(responses: _Responses, operation: Operation) -> None:
    """Come back later: rate limited, or the database cannot serve now."""
    if operation.auth is not None or 429 in operation.errors:
        responses.answer(429, "Rate limited", headers=RETRY_AFTER_HEADER)
    if operation.auth is not None or operation.body is not None or 503 in operation.errors:
        responses.answer(503, "The database is unavailable or too slow", headers=RETRY_AFTER_HEADER)


def _parameters(operation: Operation, path: str) -> list[dict[str, Any]]:
    """The path's parameters, then the query's."""
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": (
                {"type": "integer", "minimum": 1, "maximum": MAX_DATABASE_ID}
                if name == "id"
                else {"type": "string"}
            ),
        }
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    if operation.query is not None:
        query_schema = _defaults_described(operation.query.model_json_schema(by_alias=True))
        for name, field in operation.query.model_fields.items():
            alias = field.alias or name
            parameters.append(
                {
                    "name": alias,
                    "in": "query",
                    "required": field.is_required(),
                    "schema": query_schema["properties"][alias],
                }
            )
    return parameters


def _json_body(operation: Operation, components: dict[str, Any]) -> dict[str, Any]:
    """`requestBody` (and, for a body that may also come as a form, `description`)."""
    body = operation.body
    content = _json_content(_schema_reference(body, "validation", components))
    document: dict[str, Any] = {}
    if operation.form is not None:
        # Said in words, not as a second content type: generators make a body that is
        # JSON or a form into a client that does not import (openapi-python-client 0.29).
        fields = ", ".join(operation.form.model_fields)
        document["description"] = (
            "Also takes the OAuth2 password flow's form "
            f"(`application/x-www-form-urlencoded`: {fields}), which the docs page's "
            "Authorize button sends."
        )
    # A body whose fields are all optional may be left out: it means `{}`.
    required = any(field.is_required() for field in body.model_fields.values())
    document["requestBody"] = {"required": required, "content": content}
    return document


def _upload_body(operation: Operation) -> dict[str, Any]:
    # One binary content type: what every client generator turns into "send this file".
    return {
        "description": f"The file as the body: {operation.upload}.",
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    }


def _operation_document(
    operation: Operation, path: str, components: dict[str, Any]
) -> dict[str, Any]:
    responses = _Responses(components)
    _declared_answers(responses, operation)
    _access_answers(responses, operation, path)
    _input_answers(responses, operation)
    _unavailable_answers(responses, operation)
    document: dict[str, Any] = {"summary": operation.summary, "responses": responses.by_status}
    if parameters := _parameters(operation, path):
        document["parameters"] = parameters
    if operation.body is not None:
        document |= _json_body(operation, components)
    if operation.upload is not None:
        document |= _upload_body(operation)
    if operation.auth is not None:
        document["security"] = [{"OAuth2PasswordBearer": []}]
    return document


API_GROUPS = (
    "auth",
    "users",
    "profiles",
    "periods",
    "moods",
    "observations",
    "predictions",
    "admin",
)


def _enums_named(document: Any, enums: Mapping[str, Any]) -> Any:
    """The document with every inline enum of `enums` (name → Literal) replaced by a
    reference to one component of that name, so generated clients get one type each."""
    by_values = {tuple(typing.get_args(literal)): name for name, literal in enums.items()}

    def named(node: Any) -> Any:
        if isinstance(node, list):
            return [named(item) for item in node]
        if not isinstance(node, dict):
            return node
        if (name := by_values.get(tuple(node.get("enum", ())))) is not None:
            return {"$ref": f"#/components/schemas/{name}"} | (
                {"description": node["description"]} if "description" in node else {}
            )
        return {key: named(value) for key, value in node.items()}

    document = named(document)
    for name, literal in enums.items():
        values = list(typing.get_args(literal))
        kind = "integer" if isinstance(values[0], int) else "string"
        document["components"]["schemas"][name] = {"title": name, "type": kind, "enum": values}
    document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    return document


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route, from the models the handlers validate with."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for route in routes:
        if not route.include_in_schema:
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method, handler in route.handlers.items():
            document = _operation_document(handler.operation, path, components)
            # Stable and unique: the method and the path (`get_periods`, `put_periods_id`).
            document["operationId"] = re.sub(r"\W+", "_", f"{method} {path}").strip("_")
            group = path.strip("/").split("/")[0]
            group = "users" if group == "calendar" else group  # her feed, in the contract's users
            document["tags"] = [group if group in API_GROUPS else "service"]
            paths.setdefault(path, {})[method] = document
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "PlanHer",
            "version": __version__,
            "description": "Cycle and energy tracking. Authorize with your email and password.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "OAuth2PasswordBearer": {
                    "type": "oauth2",
                    "flows": {"password": {"tokenUrl": "/auth/login", "scopes": {}}},
                }
            },
        },
    }
    return _enums_named(document, DOCUMENTED_ENUMS)
