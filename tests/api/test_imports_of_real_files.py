"""POST /users/me/import with files other people wrote (../shared/formats/real/, whose
README says what PlanHer should make of each), and fixtures of ours that reproduce what
they carry."""

import json

import pytest

from conftest import ROOT, create_account, import_file

REAL_FILES = ROOT.parent / "shared" / "formats" / "real"


def real_file(name: str) -> bytes:
    path = REAL_FILES / name
    if not path.exists():
        pytest.skip(f"{path} is not here: the real export files come with ../shared")
    return path.read_bytes()


def observations_of(client, account) -> list[tuple]:
    listed = client.get("/observations/", headers=account.headers).json()
    return [(item["date"], item["bbt_celsius"], item["cervical_mucus"]) for item in listed]


def imported(report: dict) -> tuple[int, int, int]:
    return tuple(report[what]["count"] for what in ("periods", "moods", "observations"))


DRIP_HEADER = (
    "date,temperature.value,temperature.exclude,bleeding.value,bleeding.exclude,"
    "mucus.feeling,mucus.texture,mucus.value,mucus.exclude\n"
)


def test_the_real_drip_export_imports_its_period_and_mucus_in_drips_order(client):
    account = create_account(client)
    content = real_file("drip-example-drip-data.csv")
    report = import_file(client, account, content)
    assert report.status_code == 200, report.text
    periods = client.get("/periods/", headers=account.headers).json()
    assert [(p["start_date"], p["end_date"]) for p in periods] == [("2024-03-03", "2024-03-05")]
    assert observations_of(client, account) == [
        ("2024-03-05", 36.5, "creamy"),  # texture creamy: value 3
        ("2024-03-04", 36.5, None),  # its mucus is excluded
        ("2024-03-03", 35.0, "sticky"),  # feeling wet: value 2
    ]
    assert client.get("/moods/", headers=account.headers).json() == []
    assert imported(import_file(client, account, content).json()) == (0, 0, 0)


@pytest.mark.parametrize(
    ("feeling", "texture", "value", "stored"),
    [
        ("0", "0", "0", "dry"),
        ("1", "0", "1", "dry"),  # nothing felt is no fertile sign
        ("2", "0", "2", "sticky"),
        ("0", "1", "3", "creamy"),
        ("3", "0", "4", "egg_white"),
        ("0", "2", "", "egg_white"),  # no value: drip's own score of feeling and texture
        ("2", "1", "", "creamy"),
        ("2", "", "", None),  # no value and no texture: no mucus
    ],
)
def test_drip_mucus_keeps_drips_order_and_is_scored_when_its_value_is_empty(
    client, feeling, texture, value, stored
):
    account = create_account(client)
    row = f"2024-03-05,36.5,false,,,{feeling},{texture},{value},false\n"
    report = import_file(client, account, (DRIP_HEADER + row).encode())
    assert report.status_code == 200, report.text
    assert observations_of(client, account) == [("2024-03-05", 36.5, stored)]


@pytest.mark.parametrize(
    ("name", "unmapped"),
    [
        ("apple-health-dogsheep-export.xml", "HKQuantityTypeIdentifierBodyMassIndex"),
        ("apple-health-paulstaab-export.zip", "HKQuantityTypeIdentifierHeartRate"),
    ],
)
def test_real_apple_health_exports_without_cycle_data_import_nothing_and_say_what_they_saw(
    client, name, unmapped
):
    account = create_account(client)
    report = import_file(client, account, real_file(name))
    assert report.status_code == 200, report.text
    assert imported(report.json()) == (0, 0, 0)
    assert unmapped in report.json()["unmapped"]


def test_a_file_that_only_calls_itself_a_flo_export_is_an_unknown_format(client):
    account = create_account(client)
    content = real_file("not-flo-flux-sample.json")
    guessed = import_file(client, account, content)
    assert guessed.status_code == 422
    assert guessed.json()["code"] == "unknown_format"
    assert "flo" in guessed.json()["detail"] and "mensinator" in guessed.json()["detail"]
    named = import_file(client, account, content, format="flo")
    assert named.status_code == 422
    assert named.json()["code"] == "malformed_file"
    assert client.get("/periods/", headers=account.headers).json() == []


def test_a_json_file_with_periods_and_symptoms_of_its_own_layout_is_an_unknown_format(client):
    account = create_account(client)
    layout = b'{"periods": [{"start": "2024-01-01", "end": "2024-01-05"}], "symptoms": []}'
    answer = import_file(client, account, layout)
    assert answer.status_code == 422
    assert answer.json()["code"] == "unknown_format"


def clue_backup(days: list[dict]) -> bytes:
    """A Clue backup as real ones are: ~20 list-valued keys on every day, mostly empty."""
    empty = {key: [] for key in ("energy", "mood", "pain", "ailment", "craving", "digestion")}
    return json.dumps(
        {"data": [{**empty, **day} for day in days], "settings": {}, "environment": {}}
    ).encode()


def test_a_clue_backups_excluded_cycle_comes_in_set_aside_from_its_first_day(client):
    account = create_account(client)
    days = [
        {"day": "2024-02-02T00:00:00Z", "period": "medium"},  # out of date order
        {"day": "2024-01-05T00:00:00Z", "period": "heavy"},
        {"day": "2024-01-06T00:00:00Z", "period": "light"},
        {
            "day": "2024-02-01T00:00:00Z",
            "period": "heavy",
            "marks_excluded_cycle": True,
            "cycle_exclusion_notes": "flu",
        },
        {"day": "2024-02-02T00:00:00Z", "period": "medium"},  # the same day twice
        {"day": "2024-01-20T00:00:00Z", "energy": ["energized"]},
    ]
    report = import_file(client, account, clue_backup(days))
    assert report.status_code == 200, report.text
    periods = client.get("/periods/", headers=account.headers).json()
    assert [(p["start_date"], p["end_date"], p["excluded"], p["notes"]) for p in periods] == [
        ("2024-02-01", "2024-02-02", True, "flu"),  # from the flagged day, not a day late
        ("2024-01-05", "2024-01-06", False, None),
    ]
    assert report.json()["excluded_periods"] == ["2024-02-01"]
    unmapped = report.json()["unmapped"]
    assert unmapped.get("energy") == 1  # the one day with an entry, not all six
    assert "mood" not in unmapped and "pain" not in unmapped
