"""Observations: GET/POST /observations/, PUT/DELETE /observations/{id} — her fertility
signs, and the ovulation they show in her current prediction."""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import create_account, day


def observe(client, account, **fields) -> dict:
    response = client.post("/observations/", headers=account.headers, json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_defaults_to_today_and_returns_every_field(client, account):
    observation = observe(client, account, lh_test="negative", bbt_celsius=36.456)
    assert set(observation) == {
        "id",
        "date",
        "lh_test",
        "bbt_celsius",
        "cervical_mucus",
        "notes",
        "created_at",
    }
    assert observation["date"] == day(0)
    assert observation["bbt_celsius"] == 36.46  # two decimals
    assert observation["cervical_mucus"] is None


def test_at_least_one_sign_is_needed(client, account):
    for body in ({}, {"notes": "nothing to say"}, {"date": day(-1)}):
        response = client.post("/observations/", headers=account.headers, json=body)
        assert response.status_code == 422
        assert "at least one" in response.json()["detail"][0]["msg"]
    kept = observe(client, account, date=day(-3), cervical_mucus="creamy")
    cleared = client.put(
        f"/observations/{kept['id']}", headers=account.headers, json={"cervical_mucus": None}
    )
    assert cleared.status_code == 422
    assert (
        client.get("/observations/", headers=account.headers).json()[0]["cervical_mucus"]
        == "creamy"
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"lh_test": "maybe"}, "lh_test"),
        ({"lh_test": True}, "lh_test"),
        ({"bbt_celsius": 34.99}, "bbt_celsius"),
        ({"bbt_celsius": 39.01}, "bbt_celsius"),
        ({"bbt_celsius": "36.5"}, "bbt_celsius"),
        ({"cervical_mucus": "eggwhite"}, "cervical_mucus"),
        ({"lh_test": "positive", "notes": "x" * 2001}, "notes"),
        ({"lh_test": "positive", "notes": "a\x00b"}, "notes"),
        ({"lh_test": "positive", "mood": 2}, "mood"),
    ],
)
def test_invalid_fields_are_422(client, account, body, field):
    response = client.post("/observations/", headers=account.headers, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_one_observation_per_date_and_not_in_the_future(client, account):
    observe(client, account, date=day(-2), lh_test="negative")
    again = client.post(
        "/observations/", headers=account.headers, json={"date": day(-2), "lh_test": "positive"}
    )
    assert again.status_code == 409 and again.json()["code"] == "observation_exists"
    future = client.post(
        "/observations/", headers=account.headers, json={"date": day(1), "lh_test": "positive"}
    )
    assert future.status_code == 422
    other = observe(client, account, date=day(-4), bbt_celsius=36.5)
    moved = client.put(
        f"/observations/{other['id']}", headers=account.headers, json={"date": day(-2)}
    )
    assert moved.status_code == 409


def test_concurrent_posts_for_one_date_store_exactly_one(client, account):
    def post(_):
        body = {"date": day(-30), "bbt_celsius": 36.6}
        return client.post("/observations/", headers=account.headers, json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(post, range(8)))
    assert statuses == [201] + [409] * 7


def test_put_changes_only_the_given_fields_and_delete_removes(client, account):
    observation = observe(client, account, date=day(-5), lh_test="negative", notes="morning")
    changed = client.put(
        f"/observations/{observation['id']}",
        headers=account.headers,
        json={"bbt_celsius": 36.7},
    ).json()
    assert (changed["lh_test"], changed["bbt_celsius"], changed["notes"]) == (
        "negative",
        36.7,
        "morning",
    )
    assert (
        client.delete(f"/observations/{observation['id']}", headers=account.headers).status_code
        == 204
    )
    assert (
        client.delete(f"/observations/{observation['id']}", headers=account.headers).status_code
        == 404
    )


def test_list_is_newest_first_with_paging_filters_and_a_total(client, account):
    for offset in (-9, -7, -5, -3):
        observe(client, account, date=day(offset), cervical_mucus="sticky")
    page = client.get(
        "/observations", headers=account.headers, params={"limit": 2, "from": day(-8)}
    )
    assert page.status_code == 200 and page.headers["X-Total-Count"] == "3"
    assert [o["date"] for o in page.json()] == [day(-3), day(-5)]


def test_another_users_observation_is_404_and_stays_unchanged(client, account):
    mine = observe(client, account, date=day(-6), lh_test="positive")
    stranger = create_account(client)
    url = f"/observations/{mine['id']}"
    assert (
        client.put(url, headers=stranger.headers, json={"lh_test": "negative"}).status_code == 404
    )
    assert client.delete(url, headers=stranger.headers).status_code == 404
    assert client.get("/observations/", headers=stranger.headers).json() == []
    assert client.get("/observations/", headers=account.headers).json()[0]["lh_test"] == "positive"


def test_observations_need_a_token(client):
    assert client.get("/observations/").status_code == 401
    assert client.post("/observations/", json={"lh_test": "positive"}).status_code == 401


# ── the ovulation they show ──


def cycle_of(client, account) -> dict:
    response = client.get("/predictions/current", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["cycle"]


def log_periods(client, account, *starts: int) -> None:
    for start in starts:
        body = {"start_date": day(start), "end_date": day(start + 4)}
        assert client.post("/periods/", headers=account.headers, json=body).status_code == 201


def test_without_signs_ovulation_is_estimated(client, account):
    log_periods(client, account, -12)
    cycle = cycle_of(client, account)
    assert cycle["ovulation"]["evidence"] == "estimated"
    next_start = dt.date.fromisoformat(cycle["next_period_start"])
    assert cycle["ovulation"]["date"] == (next_start - dt.timedelta(days=15)).isoformat()


def test_a_positive_lh_test_puts_ovulation_the_next_day_and_the_next_period_after_her_luteal_phase(
    client, account
):
    log_periods(client, account, -11)
    observe(client, account, date=day(-2), lh_test="positive")
    cycle = cycle_of(client, account)
    assert cycle["ovulation"] == {"date": day(-1), "evidence": "lh"}
    # ovulation + luteal phase (her profile's, else 14 days) + 1: the day her period comes
    assert cycle["next_period_start"] == day(-1 + 14 + 1)
    assert cycle["fertile_window"] == [day(-6), day(0)]
    assert (
        cycle["next_period_range"][0] < cycle["next_period_start"] < cycle["next_period_range"][1]
    )
    phase = client.get("/predictions/current", headers=account.headers).json()["phase"]
    assert phase == "ovulatory"


def test_a_temperature_shift_confirms_ovulation(client, account):
    log_periods(client, account, -20)
    temperatures = (36.3, 36.4, 36.35, 36.3, 36.4, 36.38, 36.5, 36.55, 36.62)
    for offset, celsius in zip(range(-14, -5), temperatures, strict=True):
        observe(client, account, date=day(offset), bbt_celsius=celsius)
    cycle = cycle_of(client, account)
    assert cycle["ovulation"] == {"date": day(-9), "evidence": "bbt"}
    assert cycle["next_period_start"] == day(-9 + 15)
    assert client.get("/predictions/current", headers=account.headers).json()["phase"] == "luteal"


def test_her_own_past_luteal_phases_place_the_next_period(client, account):
    # two past cycles whose LH tests show a 11-day luteal phase
    log_periods(client, account, -70, -42, -14)
    for start, length in ((-70, 28), (-42, 28)):
        observe(client, account, date=day(start + length - 11 - 2), lh_test="positive")
    observe(client, account, date=day(-2), lh_test="positive")
    cycle = cycle_of(client, account)
    assert cycle["ovulation"]["date"] == day(-1)
    # shrunk towards the 14 days of the default profile, but mostly hers
    assert day(-1 + 11 + 1) <= cycle["next_period_start"] < day(-1 + 14 + 1)
