"""Admin: bootstrapping an admin account from the command line."""

import os
import subprocess
import sys

import pytest

from conftest import (
    ACCOUNT_FIELDS,
    PASSWORD,
    ROOT,
    Account,
    bearer,
    create_account,
    day,
    drain_training,
    log_generated_history,
    login,
    new_email,
    past_the_reuse_grace,
)
from planher.config import MAX_LIST_OFFSET


def create_admin(
    database_url: str, email: str, password: str | None
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DATABASE_URL": database_url, "BCRYPT_ROUNDS": "4"}
    environment.pop("PLANHER_ADMIN_PASSWORD", None)
    if password is not None:
        environment["PLANHER_ADMIN_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "planher", "create-admin", email],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_create_admin_makes_an_account_that_signs_in_as_admin(client, database_url):
    email = new_email()
    result = create_admin(database_url, f" {email.upper()} ", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert f"Created the admin {email}." in result.stdout
    tokens = login(client, email)
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["role"] == "admin"


def test_create_admin_promotes_an_existing_account_without_touching_its_password(
    client, database_url
):
    account = create_account(client)
    result = create_admin(database_url, account.email, None)
    assert result.returncode == 0, result.stderr
    assert "is now an admin" in result.stdout
    assert client.get("/auth/me", headers=account.headers).json()["role"] == "admin"
    login(client, account.email, account.password)


def test_create_admin_refuses_a_password_that_breaks_the_rules(client, database_url):
    email = new_email()
    result = create_admin(database_url, email, "short")
    assert result.returncode != 0
    assert "at least 8 characters" in result.stderr
    response = client.post("/auth/login", json={"email": email, "password": "short"})
    assert response.status_code == 401


# ── admin endpoints ──


@pytest.fixture
def admin(client, database_url) -> Account:
    email = new_email()
    assert create_admin(database_url, email, PASSWORD).returncode == 0
    return Account(email, PASSWORD, {}, login(client, email))


def test_admin_routes_need_a_token_and_the_admin_role(client, account):
    for path in ("/admin/users", "/admin/audit"):
        response = client.get(path)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        forbidden = client.get(path, headers=account.headers)
        assert forbidden.status_code == 403
        assert forbidden.json() == {"detail": "This needs an admin account", "code": "forbidden"}


def test_admins_see_account_fields_and_never_health_data(client, admin, account):
    client.post("/profiles/me", headers=account.headers, json={"height_cm": 170, "weight_kg": 70})
    client.post(
        "/moods/", headers=account.headers, json={"energy_level": 2, "notes": "private note"}
    )
    response = client.get("/admin/users?limit=1000", headers=admin.headers)
    assert response.status_code == 200
    listed = {user["email"]: user for user in response.json()}
    assert listed[account.email] == account.user
    assert all(set(user) == ACCOUNT_FIELDS for user in listed.values())
    assert "private note" not in response.text and "password" not in response.text
    assert int(response.headers["X-Total-Count"]) >= 2


def audit_trail(client, admin, user_id: int) -> list[dict]:
    events = client.get("/admin/audit?limit=1000", headers=admin.headers).json()
    return [(event["action"], event["ok"]) for event in events if event["user_id"] == user_id][::-1]


def test_every_security_event_is_audited_without_secrets(client, admin):
    account = create_account(client)  # audited: login
    user_id = account.user["id"]
    client.post("/auth/login", json={"email": account.email, "password": "wrong password"})
    client.put(
        "/users/me",
        headers=account.headers,
        json={"password": "new secret 1", "current_password": "wrong"},
    )
    second = login(client, account.email)
    client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    past_the_reuse_grace(client, account)
    client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})  # reuse
    moved_to = new_email()
    client.put(
        "/users/me", headers=account.headers, json={"email": moved_to, "current_password": PASSWORD}
    )
    client.put(
        "/users/me",
        headers=account.headers,
        json={"password": "new secret 1", "current_password": PASSWORD},
    )
    client.get("/users/me/export", headers=account.headers)
    client.get("/admin/users", headers=account.headers)
    client.post("/auth/logout", headers=account.headers)
    third = login(client, moved_to, "new secret 1")
    client.delete("/users/me", headers=bearer(third["access_token"]))

    assert audit_trail(client, admin, user_id) == [
        ("login", True),
        ("login", False),
        ("password_change", False),
        ("login", True),
        ("refresh_reuse", False),
        ("email_change", True),
        ("password_change", True),
        ("export", True),
        ("admin_denied", False),
        ("logout", True),
        ("login", True),
        ("account_deletion", True),
    ]
    text = client.get("/admin/audit?limit=1000", headers=admin.headers).text
    for secret in (
        PASSWORD,
        "new secret 1",
        "wrong password",
        second["refresh_token"],
        third["access_token"],
    ):
        assert secret not in text
    event = client.get("/admin/audit?limit=1", headers=admin.headers).json()[0]
    assert set(event) == {"id", "at", "user_id", "action", "target", "ip", "ok"}
    assert event["ip"] == "testclient"


def test_retrain_is_audited(client, admin):
    account = create_account(client)
    log_generated_history(client, account, days=30, seed=2)
    drain_training(client)
    assert client.post("/predictions/retrain", headers=account.headers).status_code == 200
    assert ("retrain", True) in audit_trail(client, admin, account.user["id"])


def test_the_audit_list_filters_by_day(client, admin):
    today = client.get(f"/admin/audit?from={day(0)}&to={day(0)}", headers=admin.headers)
    assert int(today.headers["X-Total-Count"]) >= 1
    tomorrow = client.get(f"/admin/audit?from={day(1)}", headers=admin.headers)
    assert tomorrow.json() == [] and tomorrow.headers["X-Total-Count"] == "0"


def test_admin_lists_refuse_an_offset_past_the_integer_range(client, admin):
    for path in ("/admin/users", "/admin/audit"):
        assert (
            client.get(f"{path}?offset={MAX_LIST_OFFSET}", headers=admin.headers).json()
            == []
        )
        response = client.get(f"{path}?offset={2**63}", headers=admin.headers)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "offset"]
