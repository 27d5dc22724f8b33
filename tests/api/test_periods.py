"""Periods: GET/POST /periods/, PUT/DELETE /periods/{id}."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import create_account, day, import_file
from planher.config import MAX_DATABASE_ID


def add_period(client, account, start: str, end: str | None = None, **extra) -> dict:
    response = client.post(
        "/periods/", headers=account.headers, json={"start_date": start, "end_date": end, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def periods_of(client, account, query: str = "") -> list[dict]:
    response = client.get(f"/periods/{query}", headers=account.headers)
    assert response.status_code == 200
    return response.json()


def test_create_returns_the_period_with_its_length(client, account):
    period = add_period(client, account, day(-10), day(-6), notes="cramps")
    assert set(period) == {
        "id",
        "start_date",
        "end_date",
        "notes",
        "excluded",
        "length_days",
        "cycle_length",
        "created_at",
    }
    assert (period["start_date"], period["end_date"]) == (day(-10), day(-6))
    assert period["length_days"] == 5
    assert period["cycle_length"] is None  # the latest period has no next start yet
    assert period["notes"] == "cramps"


def test_an_open_period_has_no_length(client, account):
    assert add_period(client, account, day(-1))["length_days"] is None


def test_cycle_length_is_the_gap_to_the_next_start_and_follows_edits(client, account):
    first = add_period(client, account, day(-60), day(-56))
    second = add_period(client, account, day(-31), day(-27))
    lengths = {p["id"]: p["cycle_length"] for p in periods_of(client, account)}
    assert lengths == {first["id"]: 29, second["id"]: None}
    client.put(f"/periods/{second['id']}", headers=account.headers, json={"start_date": day(-30)})
    assert periods_of(client, account)[1]["cycle_length"] == 30
    client.delete(f"/periods/{second['id']}", headers=account.headers)
    assert periods_of(client, account)[0]["cycle_length"] is None


def test_start_date_may_be_her_today_but_not_later(client, account):
    add_period(client, account, day(0))
    response = client.post("/periods/", headers=account.headers, json={"start_date": day(1)})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "start_date"] and "future" in error["msg"]


def test_end_date_may_not_be_in_the_future(client, account):
    response = client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-1), "end_date": day(2)}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "end_date"]


def test_end_date_before_start_date_is_422(client, account):
    response = client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-5), "end_date": day(-6)}
    )
    assert response.status_code == 422
    assert "on or after start_date" in response.json()["detail"][0]["msg"]


def test_a_period_lasts_at_most_15_days(client, account):
    assert add_period(client, account, day(-100), day(-86))["length_days"] == 15
    response = client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-60), "end_date": day(-45)}
    )
    assert response.status_code == 422
    assert "at most 15 days" in response.json()["detail"][0]["msg"]


def test_notes_are_at_most_2000_characters(client, account):
    add_period(client, account, day(-200), notes="n" * 2000)
    response = client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-100), "notes": "n" * 2001}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "notes"]


def test_overlapping_periods_are_409_and_nothing_is_stored(client, account):
    add_period(client, account, day(-40), day(-35))
    for start, end in [(day(-37), day(-33)), (day(-45), day(-40)), (day(-39), None)]:
        response = client.post(
            "/periods/", headers=account.headers, json={"start_date": start, "end_date": end}
        )
        assert response.status_code == 409, (start, end)
        assert "overlaps" in response.json()["detail"]
    assert len(periods_of(client, account)) == 1


def test_an_open_period_counts_as_menses_length_days_for_overlaps(client, account):
    add_period(client, account, day(-20))  # no end: assumed 5 days, to day(-16)
    clash = client.post("/periods/", headers=account.headers, json={"start_date": day(-16)})
    assert clash.status_code == 409
    add_period(client, account, day(-15))


def test_the_same_start_twice_is_409(client, account):
    add_period(client, account, day(-3))
    response = client.post("/periods/", headers=account.headers, json={"start_date": day(-3)})
    assert response.status_code == 409


def test_a_client_cannot_set_ids_owners_or_timestamps(client, account):
    response = client.post(
        "/periods/",
        headers=account.headers,
        json={"start_date": day(-3), "id": 7, "user_id": 1, "created_at": "2020-01-01T00:00:00Z"},
    )
    assert response.status_code == 422
    assert {tuple(e["loc"])[1] for e in response.json()["detail"]} == {
        "id",
        "user_id",
        "created_at",
    }


def test_wrong_types_are_422(client, account):
    response = client.post(
        "/periods/", headers=account.headers, json={"start_date": 20260101, "notes": 5}
    )
    assert response.status_code == 422
    response = client.post("/periods/", headers=account.headers, json={"start_date": "31/12/2025"})
    assert response.status_code == 422


def test_list_is_newest_first_with_paging_date_filters_and_a_total(client, account):
    starts = [day(-150), day(-120), day(-90), day(-60), day(-30)]
    for start in starts:
        add_period(client, account, start)
    response = client.get("/periods/?limit=2&offset=1", headers=account.headers)
    assert response.headers["X-Total-Count"] == "5"
    assert [p["start_date"] for p in response.json()] == [day(-60), day(-90)]
    response = client.get(f"/periods/?from={day(-120)}&to={day(-60)}", headers=account.headers)
    assert response.headers["X-Total-Count"] == "3"
    assert [p["start_date"] for p in response.json()] == [day(-60), day(-90), day(-120)]
    assert [p["start_date"] for p in periods_of(client, account)] == starts[::-1]


@pytest.mark.parametrize(
    "query", ["limit=1001", "limit=0", "offset=-1", "limit=ten", "from=yesterday"]
)
def test_bad_list_parameters_are_422_in_the_query(client, account, query):
    response = client.get(f"/periods/?{query}", headers=account.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


def test_the_list_works_with_and_without_the_trailing_slash(client, account):
    add_period(client, account, day(-2))
    with_slash = client.get("/periods/", headers=account.headers, follow_redirects=False)
    without = client.get("/periods", headers=account.headers, follow_redirects=False)
    assert with_slash.status_code == without.status_code == 200
    assert with_slash.json() == without.json()
    created = client.post("/periods", headers=account.headers, json={"start_date": day(-40)})
    assert created.status_code == 201


def test_put_changes_only_the_given_fields_and_can_clear_the_end(client, account):
    period = add_period(client, account, day(-10), day(-6), notes="first")
    response = client.put(f"/periods/{period['id']}", headers=account.headers, json={"notes": "x"})
    assert response.status_code == 200
    assert response.json()["end_date"] == day(-6) and response.json()["notes"] == "x"
    cleared = client.put(
        f"/periods/{period['id']}", headers=account.headers, json={"end_date": None}
    )
    assert cleared.json()["end_date"] is None and cleared.json()["length_days"] is None


def test_put_checks_the_rules_on_the_merged_period(client, account):
    period = add_period(client, account, day(-10), day(-6))
    other = add_period(client, account, day(-40), day(-36))
    bad = client.put(
        f"/periods/{period['id']}", headers=account.headers, json={"end_date": day(-12)}
    )
    assert bad.status_code == 422
    clash = client.put(
        f"/periods/{period['id']}",
        headers=account.headers,
        json={"start_date": day(-38), "end_date": day(-34)},
    )
    assert clash.status_code == 409
    moved = client.put(
        f"/periods/{other['id']}", headers=account.headers, json={"start_date": day(-41)}
    )
    assert moved.status_code == 200  # overlapping its own old dates is fine
    stored = {p["id"]: (p["start_date"], p["end_date"]) for p in periods_of(client, account)}
    assert stored[period["id"]] == (day(-10), day(-6))


def test_delete_removes_the_period(client, account):
    period = add_period(client, account, day(-3))
    assert client.delete(f"/periods/{period['id']}", headers=account.headers).status_code == 204
    assert client.delete(f"/periods/{period['id']}", headers=account.headers).status_code == 404
    assert periods_of(client, account) == []


def test_an_unknown_id_is_404_and_one_past_the_integer_range_is_422(client, account):
    path = "/periods/999999"
    assert client.put(path, headers=account.headers, json={"notes": "x"}).status_code == 404
    assert client.delete(path, headers=account.headers).status_code == 404
    for too_large in (MAX_DATABASE_ID + 1, 2**63, 10**20):
        path = f"/periods/{too_large}"
        for response in (
            client.put(path, headers=account.headers, json={"notes": "x"}),
            client.delete(path, headers=account.headers),
        ):
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["path", "id"]


def test_another_users_period_is_404_for_every_method_and_stays_unchanged(client, account):
    period = add_period(client, account, day(-10), day(-6), notes="mine")
    stranger = create_account(client)
    path = f"/periods/{period['id']}"
    put = client.put(path, headers=stranger.headers, json={"notes": "hers now"})
    delete = client.delete(path, headers=stranger.headers)
    for response in (put, delete):
        assert response.status_code == 404
        assert response.json() == {"detail": "Period not found", "code": "not_found"}
    assert client.get("/periods/", headers=stranger.headers).json() == []
    assert client.get("/periods/", headers=stranger.headers).headers["X-Total-Count"] == "0"
    assert periods_of(client, account) == [period]


def test_periods_need_a_token(client):
    for method, path in [
        ("GET", "/periods/"),
        ("POST", "/periods/"),
        ("PUT", "/periods/1"),
        ("DELETE", "/periods/1"),
    ]:
        assert client.request(method, path).status_code == 401


def test_concurrent_overlapping_posts_store_exactly_one(client, account):
    def post(offset: int) -> int:
        body = {"start_date": day(-300 + offset), "end_date": day(-296 + offset)}
        return client.post("/periods/", headers=account.headers, json=body).status_code

    with ThreadPoolExecutor(max_workers=5) as pool:
        statuses = sorted(pool.map(post, range(5)))  # every two of them overlap
    assert statuses == [201] + [409] * 4
    assert (
        client.get(f"/periods/?to={day(-250)}", headers=account.headers).headers["X-Total-Count"]
        == "1"
    )


# ── cycles she sets aside ──


def log_periods(client, account, offsets: list[int], excluded: int | None = None) -> list[dict]:
    logged = []
    for offset in offsets:
        body = {"start_date": day(offset), "end_date": day(offset + 4)}
        if offset == excluded:
            body["excluded"] = True
        response = client.post("/periods/", headers=account.headers, json=body)
        assert response.status_code == 201, response.text
        logged.append(response.json())
    return logged


def cycle_outlook(client, account) -> dict:
    answer = client.get("/predictions/current", headers=account.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["cycle"]


def test_a_cycle_she_sets_aside_counts_in_no_estimate_and_still_places_her_days(client):
    # Cycles of 28, 28, 38 and 28 days, then the open one.
    starts = [-132, -104, -76, -38, -10]
    unusual = create_account(client)
    logged = log_periods(client, unusual, starts)
    with_the_38 = cycle_outlook(client, unusual)
    usual = create_account(client)
    log_periods(client, usual, [-94, -66, -38, -10])  # 28, 28, 28
    assert with_the_38 != cycle_outlook(client, usual)  # a wider range

    the_38_day_cycle = logged[2]
    changed = client.put(
        f"/periods/{the_38_day_cycle['id']}", headers=unusual.headers, json={"excluded": True}
    )
    assert changed.status_code == 200 and changed.json()["excluded"] is True
    assert changed.json()["cycle_length"] == 38  # still its real length, shown
    assert cycle_outlook(client, unusual) == cycle_outlook(client, usual)

    mood = client.post(
        "/moods/", headers=unusual.headers, json={"date": day(-73), "energy_level": 1}
    ).json()
    assert mood["day_of_cycle"] == 4  # her days in that cycle are still placed
    listed = client.get("/periods/", headers=unusual.headers).json()
    assert [period["excluded"] for period in listed] == [False, False, True, False, False]
    exported = client.get("/users/me/export", headers=unusual.headers)
    assert sorted(period["excluded"] for period in exported.json()["periods"]) == [False] * 4 + [
        True
    ]
    moved = create_account(client)
    report = import_file(client, moved, exported.content).json()
    assert report["excluded_periods"] == [day(-76)]
    assert cycle_outlook(client, moved) == cycle_outlook(client, usual)


def test_excluded_is_false_unless_she_says_so_and_never_null(client, account):
    [period] = log_periods(client, account, [-20])
    assert period["excluded"] is False
    refused = client.put(
        f"/periods/{period['id']}", headers=account.headers, json={"excluded": None}
    )
    assert refused.status_code == 422
    created = client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-50), "excluded": True}
    )
    assert created.status_code == 201 and created.json()["excluded"] is True
