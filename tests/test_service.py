"""Service: /health, the error shapes every route shares, standard headers, CORS."""

import logging

import pytest
import sqlalchemy as sa
from starlette.routing import Route
from starlette.testclient import TestClient

import planher
from conftest import bearer, day, login, make_settings, new_email, run


def test_health_is_liveness_with_the_version(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": planher.__version__}


def test_ready_says_the_database_answers_and_can_write(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "version": planher.__version__}


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
    assert ready.headers["Retry-After"] == str(planher.RETRY_AFTER_S)
    assert ready.json() == {"detail": "The database is unavailable"}
    assert alive.status_code == 200
    assert needs_database.status_code == 503  # from the authentication backend's query
    assert needs_database.headers["Retry-After"] == str(planher.RETRY_AFTER_S)
    assert client.get("/health/ready").status_code == 200


def test_an_unknown_route_is_a_json_404(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_a_wrong_method_is_a_json_405_with_allow(client):
    response = client.patch("/users/me")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}


def test_malformed_json_is_400(client):
    response = client.post(
        "/auth/register", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is not valid JSON"}


def test_a_json_body_that_is_not_an_object_is_422(client):
    response = client.post("/auth/register", json=["a", "b"])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_a_body_over_one_mib_is_413_by_content_length(client):
    response = client.post("/auth/register", content=b"x" * (planher.MAX_BODY_BYTES + 1))
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
        client.post("/auth/register", content=b"x" * (planher.MAX_BODY_BYTES + 1)),
    ]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store", response.request.url


def test_an_unexpected_exception_is_a_generic_json_500(settings):
    app = planher.create_app(make_settings(settings.database_url))

    async def broken(request):
        raise RuntimeError("secret internals")

    app.router.routes.append(Route("/broken", broken))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "secret internals" not in response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_cors_preflight_from_the_react_dev_server_is_allowed(client):
    response = client.options(
        "/auth/login",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_an_unknown_origin_gets_no_cors_headers(client):
    response = client.get("/health", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


# ── the OpenAPI document and the docs page ──


def mounted_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for route in app.routes:
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
    login = document["paths"]["/auth/login"]["post"]["requestBody"]["content"]
    assert set(login) == {"application/json", "application/x-www-form-urlencoded"}
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


def test_the_docs_page_is_swagger_ui_for_the_document(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "swagger-ui" in response.text and 'url: "/openapi.json"' in response.text


def test_nothing_sensitive_reaches_the_logs_even_at_debug(client, caplog):
    email, password, new_password = new_email(), "a secret passphrase 1", "another secret 2"
    note = "private note about cramps 8d2f"
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
    formatter = logging.Formatter("%(name)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "Traceback" in logged and "no_such_table" in logged  # the capture saw it all
    for secret in (email, password, new_password, note, *tokens.values()):
        if isinstance(secret, str) and len(secret) > 6:
            assert secret not in logged
