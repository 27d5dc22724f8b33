"""Moods: GET/POST /moods/, PUT/DELETE /moods/{id} (replaces the old /daily_mood)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import create_account, day


def add_mood(client, account, **fields) -> dict:
    response = client.post("/moods/", headers=account.headers, json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_defaults_to_today_and_labels_the_energy(client, account):
    mood = add_mood(client, account, energy_level=2, notes="slept well")
    assert set(mood) == {
        "id",
        "date",
        "day_of_cycle",
        "phase",
        "energy_level",
        "energy_label",
        "notes",
        "created_at",
    }
    assert mood["date"] == day(0)
    assert (mood["energy_level"], mood["energy_label"]) == (2, "high")
    assert mood["day_of_cycle"] is None and mood["phase"] is None  # nothing to derive them from


@pytest.mark.parametrize("level, label", [(0, "low"), (1, "medium"), (2, "high")])
def test_energy_labels(client, account, level, label):
    assert (
        add_mood(client, account, date=day(-10 - level), energy_level=level)["energy_label"]
        == label
    )


def test_day_of_cycle_and_phase_come_from_the_periods(client, account):
    client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-20), "end_date": day(-16)}
    )
    assert add_mood(client, account, date=day(-18), energy_level=0)["phase"] == "menstrual"
    mood = add_mood(client, account, date=day(-6), energy_level=2, day_of_cycle=3)
    # Her period covers the date, so her own day_of_cycle is not used: 15th day, ovulation
    # on day 28 − 14 = 14.
    assert (mood["day_of_cycle"], mood["phase"]) == (15, "ovulatory")


def test_a_given_day_of_cycle_is_used_when_no_period_covers_the_date(client, account):
    mood = add_mood(client, account, date=day(-2), energy_level=1, day_of_cycle=20)
    assert (mood["day_of_cycle"], mood["phase"]) == (20, "luteal")


def test_derived_fields_follow_periods_logged_edited_and_deleted_later(client, account):
    mood = add_mood(client, account, date=day(-3), energy_level=1)
    assert mood["day_of_cycle"] is None
    period = client.post("/periods/", headers=account.headers, json={"start_date": day(-4)}).json()
    [listed] = client.get("/moods/", headers=account.headers).json()
    assert (listed["day_of_cycle"], listed["phase"]) == (2, "menstrual")
    client.put(f"/periods/{period['id']}", headers=account.headers, json={"start_date": day(-10)})
    assert client.get("/moods/", headers=account.headers).json()[0]["day_of_cycle"] == 8
    client.delete(f"/periods/{period['id']}", headers=account.headers)
    assert client.get("/moods/", headers=account.headers).json()[0]["day_of_cycle"] is None


def test_one_mood_per_date(client, account):
    add_mood(client, account, date=day(-1), energy_level=1)
    response = client.post(
        "/moods/", headers=account.headers, json={"date": day(-1), "energy_level": 2}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "mood_exists" and "/" not in response.json()["detail"]
    assert response.json()["detail"].startswith(f"A mood is already logged for {day(-1)}")
    other = add_mood(client, account, date=day(-2), energy_level=0)
    moved = client.put(f"/moods/{other['id']}", headers=account.headers, json={"date": day(-1)})
    assert moved.status_code == 409
    assert client.get("/moods/", headers=account.headers).headers["X-Total-Count"] == "2"


def test_the_date_may_be_her_today_but_not_later(client, account):
    add_mood(client, account, date=day(0), energy_level=1)
    response = client.post(
        "/moods/", headers=account.headers, json={"date": day(1), "energy_level": 1}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "date"]
    mood = add_mood(client, account, date=day(-1), energy_level=1)
    moved = client.put(f"/moods/{mood['id']}", headers=account.headers, json={"date": day(3)})
    assert moved.status_code == 422


@pytest.mark.parametrize(
    "body, field",
    [
        ({"energy_level": 3}, "energy_level"),
        ({"energy_level": -1}, "energy_level"),
        ({"energy_level": "2"}, "energy_level"),
        ({"energy_level": 1.5}, "energy_level"),
        ({}, "energy_level"),
        ({"energy_level": 1, "day_of_cycle": 0}, "day_of_cycle"),
        ({"energy_level": 1, "day_of_cycle": 91}, "day_of_cycle"),
        ({"energy_level": 1, "notes": "n" * 2001}, "notes"),
        ({"energy_level": 1, "phase": "luteal"}, "phase"),
        ({"energy_level": 1, "date": "yesterday"}, "date"),
    ],
)
def test_invalid_fields_are_422(client, account, body, field):
    response = client.post("/moods/", headers=account.headers, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_put_changes_only_the_given_fields(client, account):
    mood = add_mood(client, account, date=day(-4), energy_level=0, notes="tired")
    response = client.put(f"/moods/{mood['id']}", headers=account.headers, json={"energy_level": 2})
    assert response.status_code == 200
    assert response.json()["notes"] == "tired" and response.json()["energy_label"] == "high"
    cleared = client.put(f"/moods/{mood['id']}", headers=account.headers, json={"notes": None})
    assert cleared.json()["notes"] is None
    bad = client.put(f"/moods/{mood['id']}", headers=account.headers, json={"energy_level": None})
    assert bad.status_code == 422


def test_list_is_newest_first_with_paging_date_filters_and_a_total(client, account):
    for offset in range(-9, 0):
        add_mood(client, account, date=day(offset), energy_level=offset % 3)
    response = client.get(f"/moods?limit=3&from={day(-6)}&to={day(-2)}", headers=account.headers)
    assert response.headers["X-Total-Count"] == "5"
    assert [m["date"] for m in response.json()] == [day(-2), day(-3), day(-4)]
    second_page = client.get(
        f"/moods/?limit=3&offset=3&from={day(-6)}&to={day(-2)}", headers=account.headers
    )
    assert [m["date"] for m in second_page.json()] == [day(-5), day(-6)]
    assert client.get("/moods/?limit=1001", headers=account.headers).status_code == 422


def test_delete_removes_the_mood(client, account):
    mood = add_mood(client, account, energy_level=1)
    assert client.delete(f"/moods/{mood['id']}", headers=account.headers).status_code == 204
    assert client.delete(f"/moods/{mood['id']}", headers=account.headers).status_code == 404
    add_mood(client, account, energy_level=2)  # the date is free again


def test_another_users_mood_is_404_for_every_method_and_stays_unchanged(client, account):
    mood = add_mood(client, account, date=day(-1), energy_level=1, notes="mine")
    stranger = create_account(client)
    path = f"/moods/{mood['id']}"
    for response in (
        client.put(path, headers=stranger.headers, json={"energy_level": 0}),
        client.delete(path, headers=stranger.headers),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Mood not found", "code": "not_found"}
    assert client.get("/moods/", headers=stranger.headers).json() == []
    assert client.get("/moods/", headers=account.headers).json() == [mood]
    # Her date is not taken for anybody else.
    assert (
        client.post(
            "/moods/", headers=stranger.headers, json={"date": day(-1), "energy_level": 0}
        ).status_code
        == 201
    )


def test_moods_need_a_token(client):
    for method, path in [
        ("GET", "/moods"),
        ("POST", "/moods/"),
        ("PUT", "/moods/1"),
        ("DELETE", "/moods/1"),
    ]:
        assert client.request(method, path).status_code == 401


def test_concurrent_posts_for_one_date_store_exactly_one(client, account):
    def post(level: int) -> int:
        body = {"date": day(-30), "energy_level": level % 3}
        return client.post("/moods/", headers=account.headers, json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(post, range(8)))
    assert statuses == [201] + [409] * 7
    listed = client.get(f"/moods/?from={day(-30)}&to={day(-30)}", headers=account.headers)
    assert listed.headers["X-Total-Count"] == "1"
