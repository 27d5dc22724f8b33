"""Generated input at every operation: schemathesis as the external examiner (every
operation of the OpenAPI document, all of its checks, in-process against the ASGI app,
signed in as a real user with data), then hypothesis beyond what the document allows
(any JSON, any bytes, any query string, any id), finding no 500."""

import datetime as dt
import json
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import negative_data_rejection
from schemathesis.config import SchemathesisConfig
from starlette.testclient import TestClient

import planher
from conftest import (
    ON_POSTGRES,
    create_account,
    fresh_database_url,
    log_generated_history,
    make_settings,
)
from planher.application import create_app
from planher.config import COMMON_PASSWORDS, PASSWORD_MAX_BYTES, PASSWORD_MIN_CHARS, TIME_ZONES

MAX_EXAMPLES = 30

# JSON Schema counts characters; bcrypt's limit is 72 bytes of UTF-8, which the document can
# only state in words (and marks with OpenAPI's `password` format). Valid passwords are
# generated to match that rule (and to be none of the common passwords the service refuses,
# which hypothesis finds: "00000000"); invalid ones still come from the schema's lengths.
schemathesis.openapi.format(
    "password",
    st.text(
        st.characters(exclude_categories=("Cc", "Cs")),  # no control characters
        min_size=1,
        max_size=PASSWORD_MAX_BYTES,
    ).filter(
        lambda password: (
            len(password) >= PASSWORD_MIN_CHARS
            and len(password.encode("utf-8")) <= PASSWORD_MAX_BYTES
            and password.lower() not in COMMON_PASSWORDS
        )
    ),
)


@pytest.fixture(scope="module")
def examined(tmp_path_factory):
    """An app with a user who has a profile, periods, moods and a trained model, and her
    access token. The data is seeded through one app instance; schemathesis then runs the
    app (another instance on the same database) in its own event loop."""
    with fresh_database_url(
        "postgresql" if ON_POSTGRES else "sqlite", tmp_path_factory.mktemp("st")
    ) as url:
        settings = make_settings(url)
        with TestClient(create_app(settings)) as seeding:
            account = create_account(seeding)
            seeding.post(
                "/profiles/me", headers=account.headers, json={"height_cm": 165, "weight_kg": 60}
            )
            log_generated_history(seeding, account, days=40, seed=1)
            seeding.get("/predictions/current", headers=account.headers)
            seeding.post("/predictions/retrain", headers=account.headers)
        yield create_app(settings), account


@pytest.fixture(scope="module")
def api_schema(examined):
    app, account = examined
    config = SchemathesisConfig()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    schema.config.update(headers=account.headers)
    schema.config.generation.update(max_examples=MAX_EXAMPLES)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


# Time zones: the document names a format (an enum of ~600 IANA names would break client
# generators); valid ones are the service's own list.
schemathesis.openapi.format("iana-time-zone", st.sampled_from(sorted(TIME_ZONES)))

# When schemathesis makes invalid data it counts every string as breaking a custom format,
# so a perfectly good password or time zone is sent as "invalid" and the 2xx it earns is
# flagged. Its negative-data check cannot judge a body with such a field; test_auth.py and
# test_users.py prove those rules through HTTP instead.
CUSTOM_FORMAT_FIELDS = {"password", "current_password", "time_zone"}


@schema.parametrize()
def test_every_operation_passes_every_check(case):
    custom = isinstance(case.body, dict) and bool(CUSTOM_FORMAT_FIELDS & set(case.body))
    case.call_and_validate(excluded_checks=[negative_data_rejection] if custom else None)


def test_stateful_sequences_pass_every_check_including_use_after_free(api_schema):
    """Chains of calls along the links schemathesis infers (create a period, then change
    or delete it, then use it again): a deleted resource must be gone."""
    machine = api_schema.as_state_machine()
    machine.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )


# ── Beyond the document: hypothesis, looking for a 500 ──

NASTY_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "a\x00b",
        "\x1b[31m",
        "\u0085",
        "\ud800",
        "null",
        "9999-12-31",
        "0001-01-01",
        "1899-12-31",
        "2200-12-31",
        "2026-02-30",
        str(2**63),
        str(-(2**63) - 1),
        "1e400",
        "NaN",
        "' OR 1=1 --",
        "x" * 3000,
    ]
)
CONTROL_CHARACTER = st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\x85"])
# Valid-looking text (an email, a word) with a control character spiked in somewhere.
SPIKED_TEXT = st.tuples(
    st.emails() | st.text(max_size=20), CONTROL_CHARACTER, st.integers(0, 30)
).map(lambda parts: parts[0][: parts[2]] + parts[1] + parts[0][parts[2] :])
TEXT = st.text(max_size=40) | NASTY_TEXT | SPIKED_TEXT
BOUNDARY_NUMBER = st.sampled_from(
    [0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -0.0]
)
NUMBER = BOUNDARY_NUMBER | st.integers(min_value=-(2**80), max_value=2**80) | st.floats()
DATE_TEXT = (st.dates() | st.sampled_from([dt.date.min, dt.date.max])).map(
    lambda date: date.isoformat()
)
SCALAR = st.none() | st.booleans() | NUMBER | TEXT | DATE_TEXT
JSON_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
# A body field's value: as often near-valid (a spiked email, an edge number or date) as not.
FIELD_VALUE = SPIKED_TEXT | BOUNDARY_NUMBER | DATE_TEXT | JSON_VALUE
QUERY_VALUE = BOUNDARY_NUMBER.map(str) | DATE_TEXT | NASTY_TEXT | TEXT


def url_quoted(text: str) -> str:
    """Any text, lone surrogates too, as it can appear in a URL."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


PATH_ID = st.integers(min_value=-5, max_value=2**80).map(str) | TEXT.map(url_quoted)


DOCUMENTED = schemathesis.openapi.from_dict(planher.app.state.openapi)


def operations() -> list[tuple[str, str]]:
    """Every operation of the document but DELETE /users/me, which would end the run."""
    return [
        (method.upper(), path)
        for path, methods in planher.app.state.openapi["paths"].items()
        for method in methods
        if (method, path) != ("delete", "/users/me")
    ]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A running app and a user with a profile, periods, moods and a model."""
    with fresh_database_url(
        "postgresql" if ON_POSTGRES else "sqlite", tmp_path_factory.mktemp("fuzz")
    ) as url:
        with TestClient(create_app(make_settings(url))) as client:
            account = create_account(client)
            client.post(
                "/profiles/me", headers=account.headers, json={"height_cm": 165, "weight_kg": 60}
            )
            log_generated_history(client, account, days=40, seed=2)
            yield client, account


def encoded(body, media_type: str) -> bytes:
    """A body as a client could send it; JSON escapes lone surrogates, which UTF-8 cannot
    carry."""
    if isinstance(body, bytes):
        return body
    if media_type == "application/x-www-form-urlencoded" and isinstance(body, dict):
        return "&".join(
            f"{url_quoted(str(name))}={url_quoted(str(value))}" for name, value in body.items()
        ).encode()
    return json.dumps(body).encode()


def spiked(text: str, control: str, at: int) -> str:
    return text[:at] + control + text[at:]


@pytest.mark.parametrize("method, path", operations(), ids=[" ".join(o) for o in operations()])
@settings(
    max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(data=st.data())
def test_no_generated_input_gets_a_500(fuzzed, method, path, data):
    """Valid requests from the document, then one thing in each broken: a control character
    spiked into a text, an edge value for a parameter or field, the id, or the whole body."""
    client, account = fuzzed
    operation = DOCUMENTED[path][method]
    case = data.draw(operation.as_strategy(), label="valid request")
    query = dict(case.query or {})
    body = case.body if isinstance(case.body, dict) else {}
    path_id = (case.path_parameters or {}).get("id")
    parameters = [parameter.name for parameter in operation.query] or ["unknown"]
    broken = data.draw(st.sampled_from(["spike", "query", "field", "id", "body"]), label="how")
    texts = [
        (place, name)
        for place in (query, body)
        for name, value in place.items()
        if isinstance(value, str)
    ]
    if broken == "spike" and texts:
        place, name = data.draw(st.sampled_from(texts), label="text")
        control = data.draw(st.just("\x00") | CONTROL_CHARACTER, label="control")
        place[name] = spiked(place[name], control, data.draw(st.integers(0, len(place[name]))))
    elif broken == "query":
        query[data.draw(st.sampled_from(parameters), label="parameter")] = data.draw(QUERY_VALUE)
    elif broken == "field":
        field = data.draw(st.sampled_from([*body, "unknown"]), label="field")
        body[field] = data.draw(FIELD_VALUE, label="value")
    elif broken == "id":
        path_id = data.draw(PATH_ID, label="id")
    else:
        body = data.draw(JSON_VALUE | st.binary(max_size=40), label="body")
    url = path.replace("{id}", str(path_id))
    if query:
        url += "?" + "&".join(f"{name}={url_quoted(str(value))}" for name, value in query.items())
    media_type = case.media_type or "application/json"
    headers = {"Content-Type": media_type}
    if path != "/auth/logout":  # a signed-in logout would end the login the run uses
        headers |= account.headers
    response = client.request(method, url, content=encoded(body, media_type), headers=headers)
    assert response.status_code < 500, response.text
