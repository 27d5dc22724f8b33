"""Auth: register, login (JSON and OAuth2 form), refresh rotation, logout, /auth/me."""

import asyncio
import datetime as dt
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import httpx
import itsdangerous
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import (
    ACCOUNT_FIELDS,
    ON_POSTGRES,
    PASSWORD,
    TEST_SECRET_KEY,
    bearer,
    create_account,
    fresh_database_url,
    login,
    make_settings,
    new_email,
    past_the_reuse_grace,
    run,
    uvicorn_server,
)
from planher.application import create_app
from planher.clock import utc_now
from planher.config import (
    ACCESS_TOKEN_SALT,
    ACCESS_TOKEN_TTL_S,
    DB_TIMEOUT_S,
    REFRESH_TOKEN_SALT,
    REFRESH_TOKEN_TTL_S,
    SECRET_KEY_FILE_SUFFIX,
    RateLimit,
)
from planher.errors import ERROR_CODES
from planher.security.tokens import TokenSigner
from planher.storage.database import Database
from planher.storage.tables import audit_events, rate_limits
from planher.web.middleware import StartupFailed

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def resign(token: str, salt: str, key: str = TEST_SECRET_KEY, age_s: int = 0) -> str:
    """The same payload, signed with `key` as if issued `age_s` seconds ago."""
    payload = itsdangerous.URLSafeTimedSerializer(TEST_SECRET_KEY, salt=salt).loads(token)

    class BackdatedSigner(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_s

    return itsdangerous.URLSafeTimedSerializer(key, salt=salt, signer=BackdatedSigner).dumps(
        payload
    )


UNAUTHORIZED_CODES = {
    "Incorrect email or password": "wrong_credentials",
    "Not authenticated": "not_authenticated",
    "Invalid token": "invalid_token",
    "Token has expired": "token_expired",
    "Token has been revoked": "token_revoked",
}


def assert_unauthorized(response, detail: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] in ERROR_CODES
    if detail is not None:
        assert response.json() == {"detail": detail, "code": UNAUTHORIZED_CODES[detail]}


# ── register ──


def test_register_returns_the_user_with_email_trimmed_and_lowercased(client):
    email = new_email()
    response = client.post(
        "/auth/register", json={"email": f"  {email.upper()} ", "password": PASSWORD, "name": "Ada"}
    )
    assert response.status_code == 201
    user = response.json()
    assert set(user) == ACCOUNT_FIELDS
    assert user["email"] == email and user["time_zone"] == "UTC"
    assert user["name"] == "Ada"
    assert user["role"] == "user"
    assert isinstance(user["id"], int)
    assert TIMESTAMP.match(user["created_at"]) and TIMESTAMP.match(user["updated_at"])


def test_register_with_an_existing_email_in_any_case_is_409(client, account):
    response = client.post(
        "/auth/register", json={"email": account.email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


def test_register_refuses_fields_a_client_may_not_set(client):
    response = client.post(
        "/auth/register",
        json={"email": new_email(), "password": PASSWORD, "role": "admin", "id": 1},
    )
    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert locations == {("body", "role"), ("body", "id")}


@pytest.mark.parametrize(
    "password, accepted",
    [
        ("k3Vq9!z", False),
        ("k3Vq9!zR", True),
        ("k3Vq9!zR" * 8, True),
        ("k3Vq9!zR" * 9, True),
        ("k3Vq9!zR" * 9 + "x", False),
        ("é" * 36, True),  # 72 bytes in UTF-8
        ("é" * 37, False),  # 37 characters but 74 bytes
    ],
)
def test_password_needs_8_characters_and_at_most_72_utf8_bytes(client, password, accepted):
    response = client.post("/auth/register", json={"email": new_email(), "password": password})
    if accepted:
        assert response.status_code == 201, response.text
        return
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "password"]
    assert ("72 bytes" in error["msg"]) == (len(password) > 8)


def test_a_password_over_72_bytes_is_never_truncated_into_a_login(client):
    email = new_email()
    client.post("/auth/register", json={"email": email, "password": "b" * 72})
    response = client.post("/auth/login", json={"email": email, "password": "b" * 73})
    assert response.status_code == 422
    assert "72 bytes" in response.json()["detail"][0]["msg"]


def test_validation_errors_have_the_fastapi_shape_and_never_echo_the_input(client):
    secret = "s3cret-but-too-" + "long" * 20
    response = client.post("/auth/register", json={"email": "not-an-email", "password": secret})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert all(set(error) == {"loc", "msg", "type"} for error in errors)
    assert {tuple(error["loc"]) for error in errors} == {("body", "email"), ("body", "password")}
    assert secret not in response.text and "not-an-email" not in response.text


def test_register_with_wrong_types_is_422_per_field(client):
    response = client.post("/auth/register", json={"email": 5, "password": True, "name": []})
    assert response.status_code == 422
    assert {tuple(error["loc"]) for error in response.json()["detail"]} == {
        ("body", "email"),
        ("body", "password"),
        ("body", "name"),
    }


def test_register_with_missing_fields_names_them(client):
    response = client.post("/auth/register", json={})
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
        (["body", "email"], "missing"),
        (["body", "password"], "missing"),
    ]


# ── login ──


def test_login_with_json_returns_a_bearer_token_pair(client, account):
    tokens = login(client, account.email)
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == ACCESS_TOKEN_TTL_S
    assert client.get("/auth/me", headers=bearer(tokens["access_token"])).json() == account.user


def test_login_with_the_oauth2_password_form_works_like_json(client, account):
    response = client.post(
        "/auth/login",
        data={"grant_type": "password", "username": account.email.upper(), "password": PASSWORD},
    )
    assert response.status_code == 200
    me = client.get("/auth/me", headers=bearer(response.json()["access_token"]))
    assert me.json()["id"] == account.user["id"]


def test_login_with_an_incomplete_form_is_422(client):
    response = client.post("/auth/login", data={"username": new_email()})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]


def test_wrong_password_and_unknown_email_get_the_same_401(client, account):
    wrong_password = client.post(
        "/auth/login", json={"email": account.email, "password": "not the password"}
    )
    unknown_email = client.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    for response in (wrong_password, unknown_email):
        assert_unauthorized(response, "Incorrect email or password")


def test_an_unknown_email_still_costs_one_bcrypt_check(client, monkeypatch):
    checks = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(
        bcrypt,
        "checkpw",
        lambda password, hashed: checks.append(1) or real_checkpw(password, hashed),
    )
    client.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert checks == [1]


def test_bcrypt_never_runs_on_the_event_loop_thread(client, monkeypatch):
    threads = []
    real_hashpw, real_checkpw = bcrypt.hashpw, bcrypt.checkpw

    def recording(real):
        def call(*args):
            threads.append(threading.get_ident())
            return real(*args)

        return call

    monkeypatch.setattr(bcrypt, "hashpw", recording(real_hashpw))
    monkeypatch.setattr(bcrypt, "checkpw", recording(real_checkpw))
    create_account(client)
    loop_thread = client.portal.call(threading.get_ident)
    assert len(threads) == 2
    assert loop_thread not in threads


# ── /auth/me and the middleware ──


def test_auth_me_without_a_token_is_401_with_a_bearer_challenge(client):
    assert_unauthorized(client.get("/auth/me"), "Not authenticated")


SWAGGER_BASIC = {"Authorization": "Basic Og=="}  # what Swagger UI's Authorize sends


def test_a_non_bearer_authorization_header_is_ignored_on_public_routes(client, account):
    assert client.get("/health", headers=SWAGGER_BASIC).status_code == 200
    body = {"email": account.email, "password": PASSWORD}
    assert client.post("/auth/login", headers=SWAGGER_BASIC, json=body).status_code == 200
    form = {"username": account.email, "password": PASSWORD, "grant_type": "password"}
    assert client.post("/auth/login", headers=SWAGGER_BASIC, data=form).status_code == 200


def test_a_non_bearer_authorization_header_is_a_missing_token_on_protected_routes(client):
    for header in (SWAGGER_BASIC, {"Authorization": "Bearer"}, {"Authorization": "Token x"}):
        assert_unauthorized(client.get("/auth/me", headers=header), "Not authenticated")


def test_a_tampered_access_token_is_401(client, account):
    token = account.tokens["access_token"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert_unauthorized(client.get("/auth/me", headers=bearer(tampered)), "Invalid token")
    assert_unauthorized(client.get("/auth/me", headers=bearer("garbage")), "Invalid token")


def test_an_expired_access_token_is_401(client, account):
    expired = resign(
        account.tokens["access_token"],
        ACCESS_TOKEN_SALT,
        age_s=ACCESS_TOKEN_TTL_S + 5,
    )
    assert_unauthorized(client.get("/auth/me", headers=bearer(expired)), "Token has expired")
    fresh = resign(account.tokens["access_token"], ACCESS_TOKEN_SALT, age_s=60)
    assert client.get("/auth/me", headers=bearer(fresh)).status_code == 200


def test_an_expired_refresh_token_is_401(client, account):
    expired = resign(
        account.tokens["refresh_token"],
        REFRESH_TOKEN_SALT,
        age_s=REFRESH_TOKEN_TTL_S + 5,
    )
    assert_unauthorized(
        client.post("/auth/refresh", json={"refresh_token": expired}), "Token has expired"
    )


def test_a_refresh_token_is_never_accepted_as_an_access_token(client, account):
    response = client.get("/auth/me", headers=bearer(account.tokens["refresh_token"]))
    assert_unauthorized(response, "Invalid token")
    response = client.post("/auth/refresh", json={"refresh_token": account.tokens["access_token"]})
    assert_unauthorized(response, "Invalid token")


def test_tokens_signed_with_an_older_listed_key_still_work_and_unlisted_keys_fail(
    client, settings, account
):
    rotated = make_settings(settings.database_url, secret_keys=("brand-new-key", TEST_SECRET_KEY))
    with TestClient(create_app(rotated)) as rotated_client:
        old_key_token = account.tokens["access_token"]
        assert rotated_client.get("/auth/me", headers=bearer(old_key_token)).status_code == 200
        new_tokens = login(rotated_client, account.email)
        assert (
            rotated_client.get("/auth/me", headers=bearer(new_tokens["access_token"])).status_code
            == 200
        )
        # The old app does not know the new key.
        assert_unauthorized(client.get("/auth/me", headers=bearer(new_tokens["access_token"])))
    forged = resign(old_key_token, ACCESS_TOKEN_SALT, key="some-retired-key")
    assert_unauthorized(client.get("/auth/me", headers=bearer(forged)), "Invalid token")


def test_a_stale_token_does_not_block_public_routes(client, account):
    stale = bearer("expired-or-garbage")
    assert client.get("/health", headers=stale).status_code == 200
    response = client.post(
        "/auth/refresh", json={"refresh_token": account.tokens["refresh_token"]}, headers=stale
    )
    assert response.status_code == 200


# ── refresh ──


def test_refresh_rotates_and_the_old_refresh_token_stops_working(client, account):
    response = client.post("/auth/refresh", json={"refresh_token": account.tokens["refresh_token"]})
    assert response.status_code == 200
    pair = response.json()
    assert pair["refresh_token"] != account.tokens["refresh_token"]
    assert pair["token_type"] == "bearer" and pair["expires_in"] == ACCESS_TOKEN_TTL_S
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    second = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert second.status_code == 200


def test_the_same_refresh_token_again_within_the_grace_gets_the_pair_already_issued(
    client, account
):
    used = account.tokens["refresh_token"]
    first = client.post("/auth/refresh", json={"refresh_token": used}).json()
    again = client.post("/auth/refresh", json={"refresh_token": used})
    assert again.status_code == 200, again.text
    tokens = client.app.state.tokens
    assert tokens.load_refresh(again.json()["refresh_token"]) == tokens.load_refresh(
        first["refresh_token"]
    )  # the same login and the same refresh id: one pair, signed twice
    for pair in (first, again.json()):
        assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    rotated = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200


def test_two_tabs_refreshing_with_one_token_at_once_both_stay_signed_in(client, account):
    used = account.tokens["refresh_token"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda _: client.post("/auth/refresh", json={"refresh_token": used}), range(8))
        )
    assert [answer.status_code for answer in answers] == [200] * 8
    refresh_ids = {
        client.app.state.tokens.load_refresh(a.json()["refresh_token"])["jti"] for a in answers
    }
    assert len(refresh_ids) == 1
    assert (
        client.get("/auth/me", headers=bearer(answers[0].json()["access_token"])).status_code == 200
    )


def test_reusing_a_refresh_token_after_the_grace_revokes_the_whole_login(client, account):
    first = client.post("/auth/refresh", json={"refresh_token": account.tokens["refresh_token"]})
    newest = first.json()
    past_the_reuse_grace(client, account)
    reuse = client.post("/auth/refresh", json={"refresh_token": account.tokens["refresh_token"]})
    assert_unauthorized(reuse)
    assert reuse.json()["code"] == "refresh_token_reused"
    assert "already used" in reuse.json()["detail"]
    # Every token of that login is dead now, including the thief's fresh pair.
    assert_unauthorized(
        client.post("/auth/refresh", json={"refresh_token": newest["refresh_token"]})
    )
    assert_unauthorized(client.get("/auth/me", headers=bearer(newest["access_token"])))
    assert_unauthorized(client.get("/auth/me", headers=account.headers))
    # Other logins of the same user are untouched.
    other = login(client, account.email)
    assert client.get("/auth/me", headers=bearer(other["access_token"])).status_code == 200


def test_refresh_with_a_malformed_body_is_422(client):
    assert client.post("/auth/refresh", json={}).status_code == 422
    assert client.post("/auth/refresh", json={"refresh_token": 12}).status_code == 422


# ── logout ──


def test_logout_revokes_the_access_token_and_the_refresh_token_of_that_login(client, account):
    other = login(client, account.email)
    response = client.post("/auth/logout", headers=account.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_unauthorized(client.get("/auth/me", headers=account.headers), "Token has been revoked")
    assert_unauthorized(
        client.post("/auth/refresh", json={"refresh_token": account.tokens["refresh_token"]})
    )
    assert client.get("/auth/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_with_a_refresh_token_also_ends_that_login(client, account):
    other = login(client, account.email)
    response = client.post(
        "/auth/logout", headers=account.headers, json={"refresh_token": other["refresh_token"]}
    )
    assert response.status_code == 204
    assert_unauthorized(client.get("/auth/me", headers=bearer(other["access_token"])))


def test_logout_ignores_another_users_refresh_token(client, account):
    stranger = create_account(client)
    body = {"refresh_token": stranger.tokens["refresh_token"]}
    assert client.post("/auth/logout", headers=account.headers, json=body).status_code == 204
    assert client.get("/auth/me", headers=stranger.headers).status_code == 200


def test_logout_without_a_token_is_401(client):
    assert_unauthorized(client.post("/auth/logout"), "Not authenticated")
    assert_unauthorized(
        client.post("/auth/logout", json={"refresh_token": "not a token"}), "Invalid token"
    )


def test_logout_with_only_a_refresh_token_ends_that_login(client, account):
    other = login(client, account.email)
    body = {"refresh_token": account.tokens["refresh_token"]}
    assert client.post("/auth/logout", json=body).status_code == 204
    assert_unauthorized(client.get("/auth/me", headers=account.headers), "Token has been revoked")
    assert_unauthorized(client.post("/auth/refresh", json=body), "Token has been revoked")
    assert client.get("/auth/me", headers=bearer(other["access_token"])).status_code == 200


# ── common passwords ──


@pytest.mark.parametrize("password", ["password1", "Iloveyou12", "QWERTYUIOP", "1234567890"])
def test_registration_refuses_the_most_common_passwords(client, password):
    response = client.post("/auth/register", json={"email": new_email(), "password": password})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "password_too_common"


# ── rate limits ──


class ClientAddress:
    """Presents the app with requests from `ip`, as uvicorn would for that client."""

    def __init__(self, app) -> None:
        self.app, self.ip = app, "198.51.100.1"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "client": (self.ip, 50000)}
        await self.app(scope, receive, send)


LOW_LIMITS = {
    "login_ip": RateLimit(6, 60),
    "login_account_ip": RateLimit(3, 900),
    "login_account": RateLimit(4, 900),
    "register_ip": RateLimit(3, 3600),
    "api_user": RateLimit(8, 60),
}


@pytest.fixture
def limited(tmp_path):
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url:
        addressed = ClientAddress(create_app(make_settings(url, rate_limits=LOW_LIMITS)))
        with TestClient(addressed) as client:
            yield client, addressed


def assert_rate_limited(response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["detail"].startswith("Too many")


def test_registrations_are_limited_per_address(limited):
    client, address = limited
    for _ in range(3):
        create_account(client)
    assert_rate_limited(
        client.post("/auth/register", json={"email": new_email(), "password": PASSWORD})
    )
    address.ip = "198.51.100.2"
    create_account(client)


def test_sign_in_attempts_are_limited_per_address(limited):
    client, address = limited
    address.ip = "198.51.100.9"
    account = create_account(client)  # signs in once
    for _ in range(5):
        client.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert_rate_limited(
        client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    )
    address.ip = "198.51.100.10"
    login(client, account.email)


def test_failed_sign_ins_to_one_account_from_one_address_are_limited(limited):
    client, address = limited
    account = create_account(client)
    address.ip = "203.0.113.7"
    for _ in range(3):
        wrong = client.post(
            "/auth/login", json={"email": account.email, "password": "wrong password"}
        )
        assert wrong.status_code == 401
    assert_rate_limited(
        client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    )
    address.ip = "203.0.113.8"
    login(client, account.email)


def guess_from_four_addresses(client, address: ClientAddress, email: str, first: int) -> None:
    """An attacker's wrong guesses at her password, each from an address of its own."""
    for attacker in range(4):
        address.ip = f"203.0.113.{first + attacker}"
        wrong = client.post("/auth/login", json={"email": email, "password": "guess"})
        assert wrong.status_code == 401


def test_an_attack_from_many_addresses_cannot_lock_her_out_of_her_own_device(limited):
    client, address = limited
    address.ip = "192.0.2.10"  # her phone
    account = create_account(client)
    guess_from_four_addresses(client, address, account.email, first=100)
    address.ip = "203.0.113.200"  # a new address: held back while the account is attacked
    assert_rate_limited(
        client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    )
    address.ip = "192.0.2.10"  # her own device still signs in
    login(client, account.email)


def test_each_worker_limits_the_requests_of_one_user(limited):
    client, address = limited
    account = create_account(client)
    address.ip = "198.51.100.77"
    other = create_account(client)
    for _ in range(8):
        assert client.get("/auth/me", headers=account.headers).status_code == 200
    assert_rate_limited(client.get("/auth/me", headers=account.headers))
    assert client.get("/auth/me", headers=other.headers).status_code == 200


def test_fifty_parallel_guesses_reach_bcrypt_at_most_the_limit_and_are_all_audited(tmp_path):
    limits = {**LOW_LIMITS, "login_ip": RateLimit(1000, 60)}
    limits["login_account_ip"] = RateLimit(5, 900)
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url:
        app = create_app(make_settings(url, rate_limits=limits))
        with TestClient(ClientAddress(app)) as client:
            account = create_account(client)

            def guess(n: int):
                return client.post(
                    "/auth/login", json={"email": account.email, "password": f"guess {n:04}"}
                )

            with ThreadPoolExecutor(max_workers=50) as pool:
                answers = list(pool.map(guess, range(50)))
            failures = run(client, failed_sign_ins, app.state.database, account.user["id"])
    assert_five_checked_and_the_rest_refused(answers)
    assert failures == 50


async def failed_sign_ins(database: Database, user_id: int) -> int:
    """The failed sign-ins to her account in the audit trail."""
    return await database.fetch_val(
        sa.select(sa.func.count())
        .select_from(audit_events)
        .where(
            audit_events.c.user_id == user_id,
            audit_events.c.action == "login",
            audit_events.c.ok.is_(False),
        )
    )


def assert_five_checked_and_the_rest_refused(answers) -> None:
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 5 + [429] * 45  # a 401 is a guess that bcrypt checked
    for answer in answers:
        if answer.status_code == 429:
            assert_rate_limited(answer)


def test_fifty_parallel_guesses_at_two_worker_processes_reach_bcrypt_at_most_the_limit(
    tmp_path,
):
    with (
        fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url,
        uvicorn_server(
            url,
            tmp_path / "server.log",
            workers=2,
            RATE_LIMIT_LOGIN_ACCOUNT_IP="5/900",
            RATE_LIMIT_LOGIN_ACCOUNT="20/900",
        ) as (base, _),
    ):
        email = new_email()
        with httpx.Client(base_url=base, timeout=30) as http:
            registered = http.post("/auth/register", json={"email": email, "password": PASSWORD})
            assert registered.status_code == 201

        def guess(n: int) -> httpx.Response:  # each on a connection of its own
            body = {"email": email, "password": f"guess {n:04}"}
            return httpx.post(f"{base}/auth/login", json=body, timeout=30)

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(guess, range(50)))

        async def audited() -> int:
            database = Database(url, DB_TIMEOUT_S, 1)
            await database.connect()
            try:
                return await failed_sign_ins(database, registered.json()["id"])
            finally:
                await database.disconnect()

        assert_five_checked_and_the_rest_refused(answers)
        assert asyncio.run(audited()) == 50


def test_a_logged_out_login_no_longer_exempts_its_address(limited):
    client, address = limited
    address.ip = "192.0.2.20"  # her phone
    account = create_account(client)
    guess_from_four_addresses(client, address, account.email, first=50)
    address.ip = "192.0.2.20"
    assert client.post("/auth/logout", headers=account.headers, json={}).status_code == 204
    assert_rate_limited(
        client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    )


def test_expired_rate_limit_windows_are_purged_at_most_once_a_minute(limited):
    client, address = limited
    app = address.app
    database = app.state.database
    account = create_account(client)
    long_ago = utc_now() - dt.timedelta(days=2)

    def expired_window(bucket: str) -> None:
        run(
            client,
            database.execute,
            rate_limits.insert().values(bucket=bucket, window_start=long_ago, hits=1),
        )

    def present(bucket: str) -> bool:
        query = sa.select(rate_limits.c.hits).where(rate_limits.c.bucket == bucket)
        return run(client, database.fetch_val, query) is not None

    app.state.rate_limits_purged_at = -math.inf  # as a process that never purged
    expired_window("test:first")
    login(client, account.email)
    expired_window("test:second")
    login(client, account.email)
    assert not present("test:first")
    assert present("test:second")  # the next purge is a minute away


# ── signing keys ──

# The key earlier versions used when SECRET_KEYS was unset: public, so never accepted.
PUBLIC_DEVELOPMENT_KEY = "planher-development-key-never-use-in-production"


def test_without_secret_keys_sqlite_generates_a_private_key_that_a_restart_keeps(tmp_path):
    settings = make_settings(f"sqlite:///{tmp_path / 'keyless.db'}", secret_keys=())
    with TestClient(create_app(settings)) as client:
        account = create_account(client)
    key_file = tmp_path / f"keyless.db{SECRET_KEY_FILE_SUFFIX}"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(key_file.read_text()) >= 64
    # Her real login, signed with keys the service did not generate: every claim but the
    # signature is right.
    _, payload = itsdangerous.URLSafeTimedSerializer("any").loads_unsafe(
        account.tokens["access_token"]
    )
    forged = [
        TokenSigner((key,), 900, 3600).token_pair(payload["uid"], payload["lid"], "x")[
            "access_token"
        ]
        for key in (PUBLIC_DEVELOPMENT_KEY, TEST_SECRET_KEY)
    ]
    with TestClient(create_app(settings)) as restarted:  # the same key, read back
        assert restarted.get("/auth/me", headers=account.headers).status_code == 200
        for token in forged:
            assert restarted.get("/auth/me", headers=bearer(token)).status_code == 401


def test_without_secret_keys_postgresql_refuses_to_start_saying_what_to_set():
    settings = make_settings("postgresql://planher@127.0.0.1:1/planher", secret_keys=())
    with pytest.raises(StartupFailed, match="SECRET_KEYS is not set"):
        with TestClient(create_app(settings)):
            pass


# ── client addresses behind proxies ──


@pytest.mark.parametrize(
    "forwarded_allow_ips, peer, real_address",
    [
        ((), "198.51.100.1", "198.51.100.1"),  # no proxy: the header is the client's own words
        (("*",), "10.1.2.3", "203.0.113.77"),  # Heroku: its router appends what it saw
        (("127.0.0.1",), "127.0.0.1", "203.0.113.88"),  # nginx on the same host
    ],
    ids=["no-proxy", "heroku", "nginx"],
)
def test_rotating_x_forwarded_for_lifts_no_limit_and_the_audit_keeps_the_real_address(
    tmp_path, forwarded_allow_ips, peer, real_address
):
    settings = make_settings(
        f"sqlite:///{tmp_path / 'proxied.db'}",
        rate_limits=LOW_LIMITS,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    addressed = ClientAddress(create_app(settings))
    addressed.ip = peer
    with TestClient(addressed) as client:

        def from_client(n: int) -> dict[str, str]:
            forged = f"192.0.2.{n}"  # what the client claims, rotating
            chain = forged if not forwarded_allow_ips else f"{forged}, {real_address}"
            return {"X-Forwarded-For": chain}

        answers = [
            client.post(
                "/auth/register",
                headers=from_client(n),
                json={"email": new_email(), "password": PASSWORD},
            )
            for n in range(4)
        ]
        client.post(
            "/auth/login",
            headers=from_client(9),
            json={"email": new_email(), "password": PASSWORD},
        )
        [audited] = run(
            client,
            addressed.app.state.database.fetch_all,
            sa.select(audit_events.c.ip).where(audit_events.c.action == "login"),
        )
    assert [answer.status_code for answer in answers] == [201, 201, 201, 429]
    assert audited["ip"] == real_address
