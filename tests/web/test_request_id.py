"""Request ids: echoed, declared, exposed to browsers, and on the log lines of their request."""

import json
import logging
import re

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import PASSWORD, uvicorn_server
from planher.web.request_id import NO_REQUEST, RequestIdFilter, RequestIdMiddleware

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def test_a_sane_id_is_echoed_and_any_other_replaced_by_a_new_one(client):
    assert client.get("/health", headers={"X-Request-ID": "web-7f3a:1"}).headers[
        "X-Request-ID"
    ] == "web-7f3a:1"
    for insane in ("", "a b", "x" * 129, "id;forged=1", "<script>"):
        answer = client.get("/health", headers={"X-Request-ID": insane})
        assert GENERATED.match(answer.headers["X-Request-ID"]), insane
    first, second = (client.get("/health").headers["X-Request-ID"] for _ in range(2))
    assert GENERATED.match(first) and first != second
    for failing in (client.get("/nowhere"), client.get("/auth/me"), client.post("/moods/")):
        assert GENERATED.match(failing.headers["X-Request-ID"])  # 404, 401, 422 too


def test_a_browser_app_on_another_origin_may_send_and_read_it(client):
    answer = client.get(
        "/health", headers={"Origin": "http://localhost:5173", "X-Request-ID": "ui-1"}
    )
    assert answer.headers["X-Request-ID"] == "ui-1"
    exposed = answer.headers["Access-Control-Expose-Headers"].lower()
    assert "x-request-id" in exposed
    preflight = client.options(
        "/moods/",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-request-id",
        },
    )
    assert preflight.status_code == 200


def test_every_answer_in_the_document_declares_it(client):
    document = client.get("/openapi.json").json()
    answers = [
        (path, method, status, answer)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
    ]
    assert answers
    for path, method, status, answer in answers:
        assert "X-Request-ID" in answer.get("headers", {}), (path, method, status)


def test_lines_written_during_a_request_carry_its_id_and_others_none(caplog):
    async def logging_endpoint(request):
        logging.getLogger("planher.test").info("inside")
        return PlainTextResponse("ok")

    app = RequestIdMiddleware(Starlette(routes=[Route("/", logging_endpoint)]))
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="planher"), TestClient(app) as local:
        local.get("/", headers={"X-Request-ID": "r-42"})
        logging.getLogger("planher.test").info("outside")
    assert [(record.getMessage(), record.request_id) for record in caplog.records] == [
        ("inside", "r-42"),
        ("outside", NO_REQUEST),
    ]


def test_with_log_format_json_every_line_is_one_json_object_with_its_request_id(tmp_path):
    log = tmp_path / "server.log"
    with uvicorn_server(
        f"sqlite:///{tmp_path / 'json.db'}", log, access_log=True, LOG_FORMAT="json"
    ) as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            body = {"email": "json@example.org", "password": PASSWORD}
            assert http.post("/auth/register", json=body).status_code == 201
            http.get("/auth/me", headers={"X-Request-ID": "json-1"})
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message", "request_id"} <= set(lines[0])
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line["request_id"] == "json-1" and "/auth/me" in line["message"] for line in access)
    assert any(line["logger"].startswith("planher") for line in lines)
    assert PASSWORD not in log.read_text()
