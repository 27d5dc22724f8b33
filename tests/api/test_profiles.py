"""Profiles: GET/POST/PUT /profiles/me (replaces the old /setup)."""

import pytest

from conftest import create_account

VALID = {"height_cm": 165, "weight_kg": 60}


def test_no_profile_yet_is_404(client, account):
    response = client.get("/profiles/me", headers=account.headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "No profile yet: create one first", "code": "not_found"}


def test_create_fills_defaults_and_derives_bmi(client, account):
    response = client.post("/profiles/me", headers=account.headers, json=VALID)
    assert response.status_code == 201
    profile = response.json()
    assert profile == {
        "height_cm": 165,
        "weight_kg": 60.0,
        "cycle_length": 28,
        "luteal_length": 14,
        "menses_length": 5,
        "unusual_bleeding": False,
        "number_of_peak": 2,
        "bmi": 22.0,
        "bmi_category": "normal",
        "created_at": profile["created_at"],
        "updated_at": profile["updated_at"],
    }
    assert client.get("/profiles/me", headers=account.headers).json() == profile


def test_posting_again_replaces_the_whole_profile_with_200(client, account):
    client.post("/profiles/me", headers=account.headers, json={**VALID, "cycle_length": 31})
    response = client.post(
        "/profiles/me", headers=account.headers, json={**VALID, "height_cm": 170}
    )
    assert response.status_code == 200
    assert response.json()["height_cm"] == 170
    assert response.json()["cycle_length"] == 28  # left out, so back to the default


def test_put_changes_only_the_given_fields(client, account):
    client.post("/profiles/me", headers=account.headers, json={**VALID, "number_of_peak": 4})
    response = client.put(
        "/profiles/me",
        headers=account.headers,
        json={"weight_kg": 72.345, "unusual_bleeding": True},
    )
    assert response.status_code == 200
    profile = response.json()
    assert profile["weight_kg"] == 72.35  # two decimals
    assert profile["unusual_bleeding"] is True
    assert profile["number_of_peak"] == 4 and profile["height_cm"] == 165
    assert profile["bmi"] == 26.6 and profile["bmi_category"] == "overweight"


def test_put_before_any_profile_is_404(client, account):
    response = client.put("/profiles/me", headers=account.headers, json={"weight_kg": 70})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "field, too_low, lowest, highest, too_high",
    [
        ("height_cm", 99, 100, 250, 251),
        ("weight_kg", 24.99, 25, 350, 350.01),
        ("cycle_length", 14, 25, 90, 91),
        ("luteal_length", 6, 7, 20, 21),
        ("menses_length", 0, 1, 8, 16),
        ("number_of_peak", -1, 0, 10, 11),
    ],
)
def test_every_field_has_its_range(client, account, field, too_low, lowest, highest, too_high):
    base = {**VALID, "cycle_length": 40, "luteal_length": 12, "menses_length": 5}
    for value in (lowest, highest):
        response = client.post("/profiles/me", headers=account.headers, json={**base, field: value})
        assert response.status_code in (200, 201), (field, value, response.text)
    for value in (too_low, too_high):
        response = client.post("/profiles/me", headers=account.headers, json={**base, field: value})
        assert response.status_code == 422, (field, value)
        assert response.json()["detail"][0]["loc"] == ["body", field]


def test_luteal_plus_menses_must_be_shorter_than_the_cycle(client, account):
    too_long = {**VALID, "cycle_length": 19, "luteal_length": 14, "menses_length": 5}
    response = client.post("/profiles/me", headers=account.headers, json=too_long)
    assert response.status_code == 422
    assert "less than cycle_length" in response.json()["detail"][0]["msg"]
    client.post("/profiles/me", headers=account.headers, json={**too_long, "cycle_length": 20})
    response = client.put("/profiles/me", headers=account.headers, json={"menses_length": 6})
    assert response.status_code == 422
    assert client.get("/profiles/me", headers=account.headers).json()["menses_length"] == 5


@pytest.mark.parametrize(
    "weight_kg, category",
    [
        (50.2, "underweight"),
        (50.3, "normal"),  # 18.475 shows as 18.5: the class follows the shown value
        (67.9, "normal"),
        (68.0, "overweight"),  # 24.98 → 25.0
        (81.5, "overweight"),
        (81.7, "obese"),
    ],
)
def test_bmi_category_is_the_who_class(client, account, weight_kg, category):
    response = client.post(
        "/profiles/me", headers=account.headers, json={"height_cm": 165, "weight_kg": weight_kg}
    )
    assert response.json()["bmi_category"] == category


def test_create_requires_height_and_weight_and_refuses_unknown_or_mistyped_fields(client, account):
    response = client.post(
        "/profiles/me",
        headers=account.headers,
        json={"cycle_length": "28", "unusual_bleeding": 1, "bmi": 20, "user_id": 2},
    )
    assert response.status_code == 422
    assert {tuple(error["loc"]) for error in response.json()["detail"]} == {
        ("body", "height_cm"),
        ("body", "weight_kg"),
        ("body", "cycle_length"),
        ("body", "unusual_bleeding"),
        ("body", "bmi"),
        ("body", "user_id"),
    }


def test_put_refuses_null_for_a_field(client, account):
    client.post("/profiles/me", headers=account.headers, json=VALID)
    response = client.put("/profiles/me", headers=account.headers, json={"height_cm": None})
    assert response.status_code == 422
    assert client.get("/profiles/me", headers=account.headers).json()["height_cm"] == 165


def test_each_user_sees_only_her_own_profile(client, account):
    client.post("/profiles/me", headers=account.headers, json=VALID)
    stranger = create_account(client)
    assert client.get("/profiles/me", headers=stranger.headers).status_code == 404
    client.post("/profiles/me", headers=stranger.headers, json={**VALID, "height_cm": 180})
    assert client.get("/profiles/me", headers=account.headers).json()["height_cm"] == 165


def test_profiles_need_a_token(client):
    for method in ("GET", "POST", "PUT"):
        assert client.request(method, "/profiles/me").status_code == 401
