"""Users: GET/PUT/DELETE /users/me."""

import datetime as dt
import time

import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import PASSWORD, bearer, create_account, day, login, new_email, run
from planher.application import create_app
from planher.clock import today_in, utc_now, utc_today
from planher.config import RETENTION_SWEEP_INTERVAL_S
from planher.storage.tables import (
    calendar_feeds,
    chore_runs,
    daily_moods,
    logins,
    observations,
    period_records,
    predictions,
    user_models,
    user_profiles,
    users,
)


def test_get_users_me_returns_the_signed_in_user(client, account):
    response = client.get("/users/me", headers=account.headers)
    assert response.status_code == 200
    assert response.json() == account.user


def test_users_me_needs_a_token(client):
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, "/users/me")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_name_can_be_changed_and_cleared_without_a_password(client, account):
    renamed = client.put("/users/me", headers=account.headers, json={"name": "Grace"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Grace"
    assert renamed.json()["email"] == account.email
    cleared = client.put("/users/me", headers=account.headers, json={"name": None})
    assert cleared.json()["name"] is None
    assert client.get("/users/me", headers=account.headers).json()["name"] is None


# ── her own time zone ──


def register_in(client, time_zone: str):
    email = new_email()
    body = {"email": email, "password": PASSWORD, "time_zone": time_zone}
    registered = client.post("/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    return registered.json(), bearer(login(client, email)["access_token"])


def test_a_new_account_is_in_utc_unless_she_gives_her_time_zone(client, account):
    assert account.user["time_zone"] == "UTC"
    user, _ = register_in(client, "America/Los_Angeles")
    assert user["time_zone"] == "America/Los_Angeles"


def test_an_unknown_time_zone_is_422_and_changes_nothing(client, account):
    for zone in ("Mars/Olympus_Mons", "utc+2", "", "../etc/passwd", None, 5):
        body = {"email": new_email(), "password": PASSWORD, "time_zone": zone}
        assert client.post("/auth/register", json=body).status_code == 422
        response = client.put("/users/me", headers=account.headers, json={"time_zone": zone})
        assert response.status_code == 422, response.text
    response = client.put("/users/me", headers=account.headers, json={"time_zone": "Mars/X"})
    assert "IANA" in response.json()["detail"][0]["msg"]
    assert client.get("/users/me", headers=account.headers).json()["time_zone"] == "UTC"


def test_her_time_zone_can_be_changed(client, account):
    changed = client.put("/users/me", headers=account.headers, json={"time_zone": "Asia/Tokyo"})
    assert changed.status_code == 200 and changed.json()["time_zone"] == "Asia/Tokyo"


# Whatever the hour in UTC, at least one of these is on another date than UTC: 14 hours
# ahead from 10:00 UTC, 12 hours behind until 12:00 UTC.
FAR_EAST, FAR_WEST = "Pacific/Kiritimati", "Etc/GMT+12"


def test_today_not_in_the_future_and_the_forecast_follow_her_own_date(client):
    server_today = utc_today()
    checked = 0
    for zone in (FAR_EAST, FAR_WEST):
        her_today = today_in(zone)
        if her_today == server_today:
            continue
        checked += 1
        _, headers = register_in(client, zone)
        client.post("/periods/", headers=headers, json={"start_date": day(-10)})
        mood = client.post("/moods/", headers=headers, json={"energy_level": 1})
        assert mood.json()["date"] == her_today.isoformat()  # a mood without a date
        tomorrow = (her_today + dt.timedelta(days=1)).isoformat()
        for response in (
            client.post("/moods/", headers=headers, json={"date": tomorrow, "energy_level": 1}),
            client.post("/periods/", headers=headers, json={"start_date": tomorrow}),
        ):
            assert response.status_code == 422, response.text
        assert client.get("/predictions/current", headers=headers).json()["date"] == (
            her_today.isoformat()
        )
        days = client.get("/predictions/forecast?days=3", headers=headers).json()
        assert [item["date"] for item in days][0] == her_today.isoformat()
    assert checked >= 1


def test_the_forecast_starts_on_the_date_asked_for(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-10)})
    response = client.get("/predictions/forecast?days=2&date=2027-03-01", headers=account.headers)
    assert [item["date"] for item in response.json()] == ["2027-03-01", "2027-03-02"]
    current = client.get("/predictions/current?date=2027-03-01", headers=account.headers)
    assert current.json()["date"] == "2027-03-01"


def test_update_refuses_unknown_fields_and_wrong_types(client, account):
    response = client.put("/users/me", headers=account.headers, json={"role": "admin", "name": 42})
    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {
        ("body", "role"),
        ("body", "name"),
    }
    assert client.get("/users/me", headers=account.headers).json()["role"] == "user"


def test_email_change_without_current_password_is_422(client, account):
    response = client.put("/users/me", headers=account.headers, json={"email": new_email()})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "current_password"]


def test_email_change_with_a_wrong_current_password_is_403_and_changes_nothing(client, account):
    response = client.put(
        "/users/me",
        headers=account.headers,
        json={"email": new_email(), "name": "X", "current_password": "wrong password"},
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "Current password is incorrect", "code": "wrong_password"}
    assert client.get("/users/me", headers=account.headers).json() == account.user


def test_email_change_with_the_current_password_moves_the_login(client, account):
    email = new_email()
    response = client.put(
        "/users/me",
        headers=account.headers,
        json={"email": f" {email.upper()}", "current_password": PASSWORD},
    )
    assert response.status_code == 200
    assert response.json()["email"] == email
    login(client, email)
    old = client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    assert old.status_code == 401


def test_email_change_to_a_taken_email_is_409(client, account):
    other = create_account(client)
    response = client.put(
        "/users/me",
        headers=account.headers,
        json={"email": other.email, "current_password": PASSWORD},
    )
    assert response.status_code == 409
    assert client.get("/users/me", headers=account.headers).json()["email"] == account.email


def test_password_change_revokes_every_other_login_but_keeps_this_one(client, account):
    other_login = login(client, account.email)
    new_password = "a brand new passphrase"
    response = client.put(
        "/users/me",
        headers=account.headers,
        json={"password": new_password, "current_password": PASSWORD},
    )
    assert response.status_code == 200
    assert client.get("/auth/me", headers=account.headers).status_code == 200
    assert client.get("/auth/me", headers=bearer(other_login["access_token"])).status_code == 401
    refreshed = client.post("/auth/refresh", json={"refresh_token": other_login["refresh_token"]})
    assert refreshed.status_code == 401
    assert (
        client.post("/auth/login", json={"email": account.email, "password": PASSWORD}).status_code
        == 401
    )
    login(client, account.email, new_password)


def test_new_password_follows_the_registration_rules(client, account):
    for password in ("short", "x" * 73):
        response = client.put(
            "/users/me",
            headers=account.headers,
            json={"password": password, "current_password": PASSWORD},
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "password"]
    login(client, account.email)


def test_null_email_or_password_is_422(client, account):
    response = client.put(
        "/users/me",
        headers=account.headers,
        json={"email": None, "password": None, "current_password": PASSWORD},
    )
    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {
        ("body", "email"),
        ("body", "password"),
    }


def give_user_one_row_everywhere(client, user_id: int) -> None:
    """A row in every table that belongs to a user."""
    now = utc_now()
    run(
        client,
        client.app.state.database.execute,
        user_profiles.insert().values(
            user_id=user_id, height_cm=165, weight_kg=60.5, created_at=now, updated_at=now
        ),
    )
    give_user_one_row_everywhere_but_profile(client, user_id, today=dt.date(2026, 1, 1))


def give_user_one_row_everywhere_but_profile(client, user_id: int, today=None) -> None:
    """A period, a mood, a trained model and a served prediction, straight into the tables
    (models and predictions have no endpoint that writes them directly)."""
    now, today = utc_now(), today or utc_today() - dt.timedelta(days=40)
    rows = [
        period_records.insert().values(
            user_id=user_id, start_date=today, created_at=now, updated_at=now
        ),
        daily_moods.insert().values(
            user_id=user_id, date=today, energy_level=1, created_at=now, updated_at=now
        ),
        user_models.insert().values(
            user_id=user_id,
            version=1,
            model_type="random_forest",
            shipped=True,
            cv_accuracy=0.6,
            baseline_accuracy=0.4,
            n_samples=20,
            candidates="[]",
            sklearn_version="1",
            model_blob=b"\x00model",
            trained_at=now,
        ),
        predictions.insert().values(
            user_id=user_id,
            date=today,
            predicted_level=1,
            confidence=0.5,
            source="phase_prior",
            created_at=now,
        ),
        observations.insert().values(
            user_id=user_id, date=today, lh_test="positive", created_at=now, updated_at=now
        ),
        calendar_feeds.insert().values(
            user_id=user_id, token_hash=f"{user_id:064d}", created_at=now
        ),
    ]
    for row in rows:
        run(client, client.app.state.database.execute, row)


USER_TABLES = [
    logins,
    user_profiles,
    period_records,
    daily_moods,
    user_models,
    predictions,
    calendar_feeds,
    observations,
]


def count_rows(client, user_id: int) -> dict[str, int]:
    database = client.app.state.database
    counts = {
        table.name: run(
            client,
            database.fetch_val,
            sa.select(sa.func.count()).select_from(table).where(table.c.user_id == user_id),
        )
        for table in USER_TABLES
    }
    counts["users"] = run(
        client,
        database.fetch_val,
        sa.select(sa.func.count()).select_from(users).where(users.c.id == user_id),
    )
    return counts


def test_delete_erases_the_account_and_every_row_it_owns(client, account):
    bystander = create_account(client)
    for someone in (account, bystander):
        give_user_one_row_everywhere(client, someone.user["id"])
    assert set(count_rows(client, account.user["id"]).values()) == {1}

    response = client.delete("/users/me", headers=account.headers)
    assert response.status_code == 204
    assert set(count_rows(client, account.user["id"]).values()) == {0}
    assert set(count_rows(client, bystander.user["id"]).values()) == {1}
    assert (
        client.post("/auth/login", json={"email": account.email, "password": PASSWORD}).status_code
        == 401
    )
    assert client.get("/auth/me", headers=account.headers).status_code == 401


def test_export_holds_everything_she_owns_and_nothing_else(client, account):
    stranger = create_account(client)
    for someone, height in ((account, 160), (stranger, 180)):
        client.post(
            "/profiles/me", headers=someone.headers, json={"height_cm": height, "weight_kg": 55}
        )
        client.post("/periods/", headers=someone.headers, json={"start_date": day(-12)})
        client.post("/moods/", headers=someone.headers, json={"date": day(-1), "energy_level": 2})
    give_user_one_row_everywhere_but_profile(client, account.user["id"])

    response = client.get("/users/me/export", headers=account.headers)
    assert response.status_code == 200
    export = response.json()
    assert set(export) == {
        "user",
        "profile",
        "periods",
        "moods",
        "observations",
        "predictions",
        "models",
    }
    assert export["user"] == client.get("/users/me", headers=account.headers).json()
    assert export["profile"] == client.get("/profiles/me", headers=account.headers).json()
    assert export["profile"]["height_cm"] == 160
    assert export["periods"] == client.get("/periods/", headers=account.headers).json()
    assert export["moods"] == client.get("/moods/", headers=account.headers).json()
    assert export["observations"] == client.get("/observations/", headers=account.headers).json()
    assert len(export["observations"]) == 1
    assert len(export["periods"]) == 2 and len(export["moods"]) == 2
    [prediction] = export["predictions"]
    assert prediction["source"] == "phase_prior" and prediction["actual_level"] == 1
    [model] = export["models"]
    assert model["version"] == 1 and model["type"] == "random_forest"
    assert "model_blob" not in model
    assert "\\u0000model" not in response.text and "AG1vZGVs" not in response.text  # the bytes


def test_export_of_a_new_account_is_empty_but_complete(client, account):
    export = client.get("/users/me/export", headers=account.headers).json()
    assert export["profile"] is None
    assert export["periods"] == export["moods"] == export["observations"] == []
    assert export["predictions"] == export["models"] == []


def test_a_new_password_may_not_be_a_common_one(client, account):
    response = client.put(
        "/users/me",
        headers=account.headers,
        json={"password": "sunshine1", "current_password": PASSWORD},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "password_too_common"


# ── retention: auto-delete ──


def test_retention_days_is_null_or_at_least_90_and_her_export_says_it(client, account):
    assert account.user["retention_days"] is None
    for refused in (0, 30, 89, -1, "365", True, 1.5):
        response = client.put(
            "/users/me", headers=account.headers, json={"retention_days": refused}
        )
        assert response.status_code == 422, refused
    set_ = client.put("/users/me", headers=account.headers, json={"retention_days": 365})
    assert set_.status_code == 200 and set_.json()["retention_days"] == 365
    export = client.get("/users/me/export", headers=account.headers).json()
    assert export["user"]["retention_days"] == 365
    cleared = client.put("/users/me", headers=account.headers, json={"retention_days": None})
    assert cleared.json()["retention_days"] is None


def test_history_older_than_her_retention_is_deleted_by_the_next_days_sweep(settings):
    with TestClient(create_app(settings)) as client:
        keeper, forgetter = create_account(client), create_account(client)
        for someone in (keeper, forgetter):
            for start in (-200, -120, -93, -30):
                body = {"start_date": day(start), "end_date": day(start + 4)}
                assert (
                    client.post("/periods/", headers=someone.headers, json=body).status_code == 201
                )
            for date in (-150, -91, -89, -1):
                body = {"date": day(date), "energy_level": 1}
                assert client.post("/moods/", headers=someone.headers, json=body).status_code == 201
        client.put("/users/me", headers=forgetter.headers, json={"retention_days": 90})
        yesterday = utc_now() - dt.timedelta(seconds=RETENTION_SWEEP_INTERVAL_S + 1)
        run(
            client,
            client.app.state.database.execute,
            chore_runs.update().values(last_run_at=yesterday),
        )
    with TestClient(create_app(settings)) as client:  # a start-up a day after the last sweep
        deadline = time.monotonic() + 10
        while len(kept := client.get("/periods/", headers=forgetter.headers).json()) == 4:
            assert time.monotonic() < deadline, "not swept within 10 s of start-up"
            time.sleep(0.05)
        # a period that ends within the 90 days stays whole
        assert [p["start_date"] for p in kept] == [day(-30), day(-93)]
        assert [m["date"] for m in client.get("/moods/", headers=forgetter.headers).json()] == [
            day(-1),
            day(-89),
        ]
        assert len(client.get("/periods/", headers=keeper.headers).json()) == 4
        assert len(client.get("/moods/", headers=keeper.headers).json()) == 4
