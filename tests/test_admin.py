"""Admin: bootstrapping an admin account from the command line."""

import os
import subprocess
import sys
from pathlib import Path

import planher
from conftest import PASSWORD, create_account, login, new_email


def create_admin(database_url: str, email: str, password: str | None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DATABASE_URL": database_url, "BCRYPT_ROUNDS": "4"}
    environment.pop("PLANHER_ADMIN_PASSWORD", None)
    if password is not None:
        environment["PLANHER_ADMIN_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, str(Path(planher.__file__)), "create-admin", email],
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
