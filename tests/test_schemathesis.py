"""Schemathesis as the external examiner: every operation of the OpenAPI document, all of
its checks, in-process against the ASGI app, signed in as a real user with data."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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

MAX_EXAMPLES = 30

# JSON Schema counts characters; bcrypt's limit is 72 bytes of UTF-8, which the document can
# only state in words (and marks with OpenAPI's `password` format). Valid passwords are
# generated to match that rule (and to be none of the common passwords the service refuses,
# which hypothesis finds: "00000000"); invalid ones still come from the schema's lengths.
schemathesis.openapi.format(
    "password",
    st.text(min_size=1, max_size=planher.PASSWORD_MAX_BYTES).filter(
        lambda password: (
            len(password) >= planher.PASSWORD_MIN_CHARS
            and len(password.encode("utf-8")) <= planher.PASSWORD_MAX_BYTES
            and password.lower() not in planher.COMMON_PASSWORDS
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
        with TestClient(planher.create_app(settings)) as seeding:
            account = create_account(seeding)
            seeding.post(
                "/profiles/me", headers=account.headers, json={"height_cm": 165, "weight_kg": 60}
            )
            log_generated_history(seeding, account, days=40, seed=1)
            seeding.get("/predictions/current", headers=account.headers)
            seeding.post("/predictions/retrain", headers=account.headers)
        yield planher.create_app(settings), account


@pytest.fixture(scope="module")
def api_schema(examined):
    app, account = examined
    config = SchemathesisConfig()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    schema.config.update(headers=account.headers)
    schema.config.generation.update(max_examples=MAX_EXAMPLES)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


# When schemathesis makes invalid data it counts every string as breaking a custom format,
# so a perfectly good password is sent as "invalid" and the 201 it earns is flagged. Its
# negative-data check cannot judge a body with a password field; test_auth.py proves the
# password rules through HTTP instead.
PASSWORD_FIELDS = {"password", "current_password"}


@schema.parametrize()
def test_every_operation_passes_every_check(case):
    has_password = isinstance(case.body, dict) and bool(PASSWORD_FIELDS & set(case.body))
    case.call_and_validate(excluded_checks=[negative_data_rejection] if has_password else None)


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
