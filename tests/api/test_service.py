"""Service: /health, the error shapes every route shares, standard headers, CORS, and the
Procfile's server cutting off slow clients."""

import contextlib
import json
import logging
import re
import socket
import time

import httpx
import pytest
import sqlalchemy as sa
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import (
    ON_POSTGRES,
    PASSWORD,
    ROOT,
    bearer,
    create_account,
    day,
    fresh_database_url,
    login,
    make_settings,
    new_email,
    run,
    uvicorn_server,
)
from planher.application import create_app
from planher.config import MAX_BODY_BYTES, MAX_LIST_OFFSET, RETRY_AFTER_S, __version__
from planher.errors import ERROR_CODES
from planher.web.error_responses import REQUEST_READ_TIMEOUT_DETAIL
from planher.web.log_lines import WithRequestId
from planher.web.request_id import JsonFormatter, RequestIdFilter


def test_health_is_liveness_with_the_version(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_ready_says_the_database_answers_and_can_write(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "version": __version__}


def test_ready_is_503_with_retry_after_while_liveness_stays_200(client, account):
    database = client.app.state.database
    run(client, database.disconnect)
    try:
        ready = client.get("/health/ready")
        alive = client.get("/health")
        needs_database = client.get("/moods/", headers=account.headers)
    finally:
        run(client, database.connect)
    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert ready.json() == {"detail": "The database is unavailable", "code": "database_unavailable"}
    assert alive.status_code == 200
    assert needs_database.status_code == 503  # from the authentication backend's query
    assert needs_database.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert client.get("/health/ready").status_code == 200


def test_an_unknown_route_is_a_json_404(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "code": "not_found"}


def test_a_wrong_method_is_a_json_405_with_allow(client):
    response = client.patch("/users/me")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed", "code": "method_not_allowed"}
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}


def test_malformed_json_is_400(client):
    response = client.post(
        "/auth/register", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is not valid JSON", "code": "malformed_body"}


def test_a_json_body_that_is_not_an_object_is_422(client):
    response = client.post("/auth/register", json=["a", "b"])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_a_body_over_one_mib_is_413_by_content_length(client):
    response = client.post("/auth/register", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_streamed_body_over_one_mib_is_413_without_a_content_length(client):
    def chunks():
        for _ in range(20):
            yield b" " * 65536

    response = client.post("/auth/register", content=chunks())
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_every_response_carries_no_store(client, account):
    responses = [
        client.get("/health"),
        client.get("/auth/me", headers=account.headers),
        client.get("/auth/me"),
        client.get("/nowhere"),
        client.post("/auth/register", json={}),
        client.post("/auth/register", content=b"x" * (MAX_BODY_BYTES + 1)),
    ]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store", response.request.url


def test_an_unexpected_exception_is_a_generic_json_500(settings):
    app = create_app(make_settings(settings.database_url))

    async def broken(request):
        raise RuntimeError("secret internals")

    app.router.routes.append(Route("/broken", broken))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
    assert "secret internals" not in response.text
    assert response.headers["Cache-Control"] == "no-store"


def preflight(client, path: str, origin: str, method: str, headers: str):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_cors_preflight_from_the_react_dev_server_is_allowed(client):
    origin = "http://localhost:3000"
    response = preflight(client, "/auth/login", origin, "POST", "Authorization, Content-Type")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin


def test_cors_allows_the_headers_frontends_add_and_exposes_the_ones_they_read(client):
    headers = "authorization, x-requested-with, cache-control"
    preflight_answer = preflight(client, "/moods/", "http://localhost:5173", "GET", headers)
    assert preflight_answer.status_code == 200, preflight_answer.text
    response = client.get("/moods/", headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 401
    exposed = {
        name.strip().lower()
        for name in response.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"x-total-count", "retry-after", "www-authenticate"} <= exposed


def test_an_unknown_origin_gets_no_cors_headers(client):
    response = client.get("/health", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


# ── the OpenAPI document and the docs page ──


def mounted_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for route in app.routes:
        if not route.include_in_schema:  # the docs page's files
            continue
        path = route.path.replace("{id:int}", "{id}")
        operations |= {(path, method.lower()) for method in route.methods if method != "HEAD"}
    return operations


def test_every_mounted_route_is_in_the_openapi_document_and_nothing_else(client):
    document = client.get("/openapi.json").json()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == mounted_operations(client.app)


def test_the_document_is_openapi_3_1_with_the_oauth2_password_flow(client):
    document = client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/auth/login"
    register = document["paths"]["/auth/register"]["post"]
    assert "security" not in register
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RegisterBody"
    }
    assert set(register["responses"]) >= {"201", "400", "409", "413", "422", "429"}
    login = document["paths"]["/auth/login"]["post"]
    assert set(login["requestBody"]["content"]) == {"application/json"}
    assert "application/x-www-form-urlencoded" in login["description"]  # said in words
    moods = document["paths"]["/moods/"]["get"]
    assert moods["security"] == [{"OAuth2PasswordBearer": []}]
    assert {p["name"] for p in moods["parameters"]} == {"limit", "offset", "from", "to"}
    assert moods["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/MoodOut"
    }
    assert (
        document["components"]["schemas"]["ValidationErrorOut"]["properties"]["detail"]["type"]
        == "array"
    )


def schemas_in(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schemas_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from schemas_in(item)


def test_the_document_is_one_generators_take_as_it_is(client):
    document = client.get("/openapi.json").json()
    operations = [op for item in document["paths"].values() for op in item.values()]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids)) and "get_periods" in ids and "put_moods_id" in ids
    assert "/moods" not in document["paths"] and "/moods/" in document["paths"]  # once
    schemas = document["components"]["schemas"]
    requests = [schemas[name] for name in schemas if name.endswith("Body")]
    assert requests and not any("default" in s for r in requests for s in schemas_in(r))
    assert schemas["EnergyLevel"]["enum"] == [0, 1, 2]
    assert {"Phase", "Role", "ModelType", "ModelSource", "ErrorCode"} <= set(schemas)
    assert schemas["MoodBody"]["properties"]["energy_level"] == {
        "$ref": "#/components/schemas/EnergyLevel"
    }
    window = schemas["CycleOut"]["properties"]["fertile_window"]["anyOf"][0]
    assert len(window["prefixItems"]) == 2 and window["minItems"] == window["maxItems"] == 2
    listed = document["paths"]["/moods/"]["get"]["responses"]
    assert "X-Total-Count" in listed["200"]["headers"]
    assert "Retry-After" in listed["429"]["headers"] and "Retry-After" in listed["503"]["headers"]
    assert "WWW-Authenticate" in listed["401"]["headers"]
    assert document["paths"]["/predictions/retrain"]["post"]["responses"]["202"]


def test_every_401_in_the_document_declares_the_challenge_and_the_answer_sends_it(client):
    document = client.get("/openapi.json").json()
    unauthorized = {
        (method, path): operation["responses"]["401"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "401" in operation["responses"]
    }
    assert {("post", "/auth/login"), ("post", "/auth/refresh"), ("post", "/auth/logout")} <= set(
        unauthorized
    )
    assert all("WWW-Authenticate" in answer.get("headers", {}) for answer in unauthorized.values())
    wrong = client.post("/auth/login", json={"email": "nobody@example.org", "password": "x" * 8})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    stale = client.post("/auth/refresh", json={"refresh_token": "not-a-token"})
    assert stale.status_code == 401 and stale.headers["WWW-Authenticate"] == "Bearer"


def test_the_import_formats_are_one_enum_for_the_query_and_the_report(client):
    document = client.get("/openapi.json").json()
    reference = {"$ref": "#/components/schemas/ImportFormat"}
    [query] = [
        parameter
        for parameter in document["paths"]["/users/me/import"]["post"]["parameters"]
        if parameter["name"] == "format"
    ]
    assert reference in query["schema"]["anyOf"]
    report = document["components"]["schemas"]["ImportReportOut"]
    assert report["properties"]["format"] == reference
    assert "clue_backup" in document["components"]["schemas"]["ImportFormat"]["enum"]


def test_the_docs_page_is_swagger_ui_served_by_the_service_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http" not in page.text  # nothing from another origin
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
    assert "<script>" not in page.text and len(scripts) == 2 and len(styles) == 1
    for asset in (*scripts, *styles):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 0, asset
    start = client.get(scripts[-1]).text
    assert "SwaggerUIBundle" in start and '"/openapi.json"' in start
    assert 'PACKAGE_VERSION:"5.' in client.get(scripts[0]).text  # Swagger UI 5 reads 3.1
    assert client.get("/docs/assets/swagger-editor.js").status_code == 404


def test_nothing_sensitive_reaches_the_logs_even_at_debug(client, caplog):
    email, password, new_password = new_email(), "a secret passphrase 1", "another secret 2"
    note = "private note about cramps 8d2f"
    caplog.handler.addFilter(RequestIdFilter())  # as the service's handlers have it
    with caplog.at_level(logging.DEBUG):
        assert (
            client.post("/auth/register", json={"email": email, "password": password}).status_code
            == 201
        )
        tokens = login(client, email, password)
        tokens = client.post(
            "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        ).json()
        headers = bearer(tokens["access_token"])
        client.post("/profiles/me", headers=headers, json={"height_cm": 170, "weight_kg": 60})
        client.post("/periods/", headers=headers, json={"start_date": day(-10), "notes": note})
        client.post("/moods/", headers=headers, json={"energy_level": 2, "notes": note})
        client.post("/moods/", headers=headers, json={"energy_level": 2, "notes": note})  # 409
        client.get("/predictions/current", headers=headers)
        client.get("/users/me/export", headers=headers)
        client.post("/auth/login", json={"email": email, "password": "wrong " + password})
        client.put(
            "/users/me",
            headers=headers,
            json={"password": new_password, "current_password": password},
        )
        database = client.app.state.database
        with pytest.raises(sa.exc.DBAPIError) as failed:  # a statement that fails, with her note
            run(
                client,
                database.execute,
                sa.text("INSERT INTO no_such_table VALUES (:notes)").bindparams(notes=note),
            )
        logging.getLogger("planher").exception("as a handler would log it", exc_info=failed.value)
        run(client, database.disconnect)
        try:
            assert client.get("/moods/", headers=headers).status_code == 503
        finally:
            run(client, database.connect)
        client.delete("/users/me", headers=headers)
    formats = (WithRequestId("%(name)s %(message)s"), JsonFormatter())  # LOG_FORMAT text, json
    logged = "\n".join(
        formatter.format(record) for record in caplog.records for formatter in formats
    )
    assert "Traceback" in logged and "no_such_table" in logged  # the capture saw it all
    for secret in (email, password, new_password, note, *tokens.values()):
        if isinstance(secret, str) and len(secret) > 6:
            assert secret not in logged


# ── Input that no route may answer with a 500 ───────────────────────────────────────────

LISTS = ("/periods/", "/moods/", "/predictions/history")


@pytest.mark.parametrize("path", LISTS)
def test_every_list_refuses_an_offset_past_the_integer_range(client, account, path):
    assert client.get(f"{path}?offset={MAX_LIST_OFFSET}", headers=account.headers).json() == []
    for offset in (MAX_LIST_OFFSET + 1, 2**63, 10**30):
        response = client.get(f"{path}?offset={offset}", headers=account.headers)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "offset"]


DATE_RANGE_MESSAGE = "Dates must be between 1900-01-01 and 2200-12-31"


@pytest.mark.parametrize("outside", ["1899-12-31", "0001-01-01", "2201-01-01", "9999-12-31"])
def test_a_date_outside_1900_to_2200_is_422_saying_the_range(client, account, outside):
    for response, loc in (
        (client.get(f"/predictions/current?date={outside}", headers=account.headers), "date"),
        (client.get(f"/periods/?from={outside}", headers=account.headers), "from"),
        (client.get(f"/moods/?to={outside}", headers=account.headers), "to"),
        (
            client.post("/periods/", headers=account.headers, json={"start_date": outside}),
            "start_date",
        ),
        (
            client.post(
                "/moods/", headers=account.headers, json={"date": outside, "energy_level": 1}
            ),
            "date",
        ),
    ):
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"][-1] == loc
        if outside[:4] not in ("0001", "9999") or loc in ("start_date", "date"):
            assert error["msg"] in (DATE_RANGE_MESSAGE, "Date must be in the past or today")


def test_the_oldest_history_and_the_latest_date_predict_without_overflow(client):
    her = create_account(client)
    for start in ("1900-01-01", "1900-01-29"):
        response = client.post("/periods/", headers=her.headers, json={"start_date": start})
        assert response.status_code == 201, response.text
    for date in ("1900-01-01", "2200-12-31"):
        response = client.get(f"/predictions/current?date={date}", headers=her.headers)
        assert response.status_code == 200, response.text
    assert client.get("/predictions/forecast?days=90", headers=her.headers).status_code == 200


NUL, BELL, ESCAPE, C1 = "\x00", "\x07", "\x1b", "\x85"


def send_json(send, path: str, body: dict, headers: dict | None = None):
    """JSON as a client may write it: "\\ud800" escapes a lone surrogate (httpx cannot)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return send(path, content=json.dumps(body), headers=headers)


@pytest.mark.parametrize("bad", [NUL, BELL, ESCAPE, C1, "\n", "\t"])
def test_control_characters_in_account_fields_are_422_and_nothing_changes(client, bad):
    her = create_account(client)
    attempts = [
        ("/auth/register", {"email": f"a{bad}b@example.org", "password": PASSWORD}, None),
        ("/auth/register", {"email": new_email(), "password": PASSWORD + bad}, None),
        ("/auth/register", {"email": new_email(), "password": PASSWORD, "name": f"A{bad}"}, None),
        ("/auth/login", {"email": her.email + bad, "password": PASSWORD}, None),
        ("/auth/login", {"email": her.email, "password": PASSWORD + bad}, None),
        ("/auth/refresh", {"refresh_token": her.tokens["refresh_token"] + bad}, None),
        ("/users/me", {"name": f"Her{bad}name"}, her.headers),
    ]
    for path, body, headers in attempts:
        send = client.put if path == "/users/me" else client.post
        response = send_json(send, path, body, headers)
        assert response.status_code == 422, (path, response.text)
        assert "cannot contain control characters" in response.json()["detail"][0]["msg"]
    form = {"username": her.email + bad, "password": PASSWORD}
    assert client.post("/auth/login", data=form).status_code == 422
    assert client.get("/users/me", headers=her.headers).json() == her.user


@pytest.mark.parametrize("bad", [NUL, BELL, ESCAPE, C1])
def test_control_characters_in_notes_are_422_but_line_breaks_and_tabs_are_kept(
    client, account, bad
):
    kept = "first line\r\n\tsecond line"
    period = client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-40), "notes": kept}
    )
    assert period.status_code == 201 and period.json()["notes"] == kept
    for send, path, body in (
        (client.post, "/periods/", {"start_date": day(-3), "notes": bad}),
        (client.put, f"/periods/{period.json()['id']}", {"notes": bad}),
        (client.post, "/moods/", {"energy_level": 1, "notes": bad}),
    ):
        response = send_json(send, path, body, account.headers)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["msg"] == "Notes cannot contain control characters"
    assert client.get("/periods/", headers=account.headers).json() == [period.json()]
    client.delete(f"/periods/{period.json()['id']}", headers=account.headers)


def test_a_lone_surrogate_in_json_is_malformed_json(client, account):
    for path, body in (
        ("/auth/login", {"email": "a@example.org", "password": "\ud800" * 8}),
        ("/moods/", {"energy_level": 1, "notes": "\ud800"}),
    ):
        response = send_json(client.post, path, body, account.headers)
        assert response.status_code == 400
        assert response.json() == {
            "detail": "Request body is not valid JSON",
            "code": "malformed_body",
        }


# ── Slow clients, against the Procfile's server ─────────────────────────────────────────

READ_TIMEOUT_S = 1.0
SLOW_BCRYPT_ROUNDS = 15  # a registration the app works on for longer than READ_TIMEOUT_S


@pytest.fixture(scope="module")
def procfile_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slow-clients")
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", folder) as url:
        with uvicorn_server(
            url,
            folder / "server.log",
            REQUEST_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
            BCRYPT_ROUNDS=str(SLOW_BCRYPT_ROUNDS),
        ) as (base, _):
            yield base


def raw_connection(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=READ_TIMEOUT_S * 5)


def trickle_until_answered(connection: socket.socket, first: bytes, byte: bytes) -> bytes:
    """Send `first`, then `byte` every 0.2 s until the server answers; what it answered
    before closing the connection (with a FIN, or a reset when a trickled byte was still
    unread as it closed)."""
    connection.sendall(first)
    connection.setblocking(False)
    answer, started = b"", time.monotonic()
    while time.monotonic() - started < READ_TIMEOUT_S * 5:
        try:
            chunk = connection.recv(65536)
        except BlockingIOError:
            if not answer:
                with contextlib.suppress(OSError):  # closed: the next recv says how
                    connection.send(byte)
            time.sleep(0.2)
            continue
        except ConnectionResetError:
            return answer
        if not chunk:
            return answer
        answer += chunk
    raise AssertionError(f"the connection was not closed; it answered {answer!r}")


def test_headers_that_trickle_past_the_read_timeout_get_408_and_the_connection_closes(
    procfile_server,
):
    with raw_connection(procfile_server) as connection:
        started = time.monotonic()
        answer = trickle_until_answered(
            connection, b"GET /health HTTP/1.1\r\nHost: planher\r\nX-Slow: a", b"a"
        )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body) == {
        "detail": REQUEST_READ_TIMEOUT_DETAIL,
        "code": "request_timeout",
    }
    assert time.monotonic() - started < READ_TIMEOUT_S * 3


def test_a_body_that_trickles_past_the_read_timeout_gets_408_and_the_connection_closes(
    procfile_server,
):
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: planher\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    with raw_connection(procfile_server) as connection:
        answer = trickle_until_answered(connection, head + b'{"email": "', b"a")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body) == {
        "detail": REQUEST_READ_TIMEOUT_DETAIL,
        "code": "request_timeout",
    }


def test_a_connection_that_never_sends_a_byte_is_closed_without_an_answer(procfile_server):
    with raw_connection(procfile_server) as connection:
        started = time.monotonic()
        assert connection.recv(1024) == b""
    assert READ_TIMEOUT_S * 0.9 < time.monotonic() - started < READ_TIMEOUT_S * 3


def test_neither_the_apps_own_work_nor_an_idle_keep_alive_is_cut_by_the_read_timeout(
    procfile_server,
):
    email = new_email()
    with httpx.Client(base_url=procfile_server, timeout=30) as http:
        started = time.monotonic()
        response = http.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        assert time.monotonic() - started > READ_TIMEOUT_S  # the app did work that long
        time.sleep(READ_TIMEOUT_S * 1.5)  # idle on the same kept-alive connection
        assert http.get("/health").status_code == 200


def test_every_error_code_is_listed_in_the_api_docs():
    documented = (ROOT / "docs" / "api.md").read_text()
    for code in ERROR_CODES:
        assert f"| `{code}` |" in documented, code
