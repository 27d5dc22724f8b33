"""Users: POST /users/me/import — other trackers' files and PlanHer's own export.

Every sample in ../shared/formats encodes the same made-up history; its README gives the
result each must import to, which EXPECTED_* below copy.
"""

import datetime as dt
import gzip
import io
import json
import zipfile

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import (
    PASSWORD,
    ROOT,
    bearer,
    create_account,
    day,
    drain_training,
    import_file,
    log_generated_history,
    login,
    make_settings,
    run,
)
from planher.application import create_app
from planher.clock import utc_today
from planher.config import IMPORT_MAX_JSON_BYTES
from planher.energy.demo import generate_demo_history
from planher.importers.history import SPOTTING_SKIPPED
from planher.schemas.requests import PROFILE_FIELDS
from planher.storage.tables import audit_events

# The made-up samples of ../shared/formats (its README gives the history each encodes),
# committed here so that a clone with nothing beside it tests every importer.
SAMPLES_DIR = ROOT / "tests" / "samples"
SHARED_FORMATS = ROOT.parent / "shared" / "formats"  # ../shared beside the repository

EXPECTED_PERIODS = [  # newest first, as GET /periods/ lists them
    ("2025-04-01", "2025-04-05", 5, None),
    ("2025-03-04", "2025-03-09", 6, 28),
    ("2025-02-03", "2025-02-07", 5, 29),
    ("2025-01-06", "2025-01-10", 5, 28),
]
EXPECTED_MOODS = [
    ("2025-04-02", 0),
    ("2025-03-19", 2),
    ("2025-03-06", 0),
    ("2025-02-14", 2),
    ("2025-02-05", 0),
    ("2025-01-16", 2),
    ("2025-01-08", 0),
]


def apple_health_zip(xml: bytes, *extra: tuple[str, bytes]) -> bytes:
    """An export.zip as the Health app writes it: apple_health_export/export.xml and more."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("apple_health_export/export.xml", xml)
        archive.writestr("apple_health_export/export_cda.xml", b"<ClinicalDocument/>")
        for name, content in extra:
            archive.writestr(name, content)
    return buffer.getvalue()


def sample(name: str) -> bytes:
    if name == "export.zip":
        return apple_health_zip((SAMPLES_DIR / "apple-health-export.xml").read_bytes())
    return (SAMPLES_DIR / name).read_bytes()


SAMPLES = {  # file → (format, has moods, profile settings found)
    "drip-export.csv": ("drip", True, None),
    "clue-measurements.json": ("clue", True, None),
    "ClueBackup-2025-04-20.cluedata": (
        "clue_backup",
        False,
        {"cycle_length": 28, "menses_length": 5},
    ),
    "flo-export.json": ("flo", True, None),
    "mensinator-export.json": ("mensinator", False, None),
    "Periodical-backup.json.gz": ("periodical", True, {"menses_length": 5, "luteal_length": 13}),
    "periodical-backup.json": ("periodical", True, {"menses_length": 5, "luteal_length": 13}),
    "apple-health-export.xml": ("apple_health", False, None),
    "export.zip": ("apple_health", False, None),
}


def her_periods(client, account):
    return [
        (p["start_date"], p["end_date"], p["length_days"], p["cycle_length"])
        for p in client.get("/periods/", headers=account.headers).json()
    ]


def her_moods(client, account):
    return [
        (m["date"], m["energy_level"])
        for m in client.get("/moods/", headers=account.headers).json()
    ]


def test_the_committed_samples_are_those_of_shared_formats():
    if not SHARED_FORMATS.is_dir():
        pytest.skip(f"no {SHARED_FORMATS} beside the repository to compare the samples with")
    for committed in SAMPLES_DIR.iterdir():
        assert committed.read_bytes() == (SHARED_FORMATS / committed.name).read_bytes(), (
            f"tests/samples/{committed.name} differs from ../shared/formats: copy it again"
        )


@pytest.mark.parametrize("name", SAMPLES)
def test_each_trackers_sample_imports_to_the_expected_history(client, account, name):
    format_name, has_moods, settings = SAMPLES[name]
    response = import_file(client, account, sample(name))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["format"] == format_name and report["dry_run"] is False
    assert report["periods"] == {"count": 4, "first_date": "2025-01-06", "last_date": "2025-04-01"}
    assert her_periods(client, account) == EXPECTED_PERIODS
    assert her_moods(client, account) == (EXPECTED_MOODS if has_moods else [])
    assert report["moods"]["count"] == (7 if has_moods else 0)
    if settings is None:
        assert report["profile"] is None
    else:  # a profile needs her height and weight, which no tracker's file has
        assert report["profile"] == {"found": settings, "applied": False}
        assert client.get("/profiles/me", headers=account.headers).status_code == 404


def test_spotting_and_excluded_days_are_reported_not_imported(client, account):
    report = import_file(client, account, sample("drip-export.csv")).json()
    skipped = {(entry["what"], entry["reason"]): entry for entry in report["skipped"]}
    spotting = skipped[("day", SPOTTING_SKIPPED)]
    assert spotting["count"] == 2 and spotting["dates"] == ["2025-01-20", "2025-03-03"]
    assert skipped[("day", "bleeding she marked as not her period")]["dates"] == ["2025-02-20"]
    assert report["unmapped"]["temperature.time"] == 2  # counted, not lost in silence


def test_notes_come_along_with_the_energy_of_the_day(client, account):
    import_file(client, account, sample("drip-export.csv"))
    notes = {m["date"]: m["notes"] for m in client.get("/moods/", headers=account.headers).json()}
    assert notes["2025-01-16"] == "great run. felt strong; happy"
    assert notes["2025-02-05"] == "sad"


@pytest.mark.parametrize(
    "name, signs",
    [
        ("drip-export.csv", [("2025-03-19", None, 36.7), ("2025-01-16", None, 36.45)]),
        ("clue-measurements.json", [("2025-02-18", "positive", None)]),
        ("flo-export.json", [("2025-02-18", "positive", None)]),
    ],
)
def test_temperatures_and_lh_tests_come_across_as_observations(client, account, name, signs):
    report = import_file(client, account, sample(name)).json()
    assert report["observations"]["count"] == len(signs)
    listed = client.get("/observations/", headers=account.headers).json()
    assert [(o["date"], o["lh_test"], o["bbt_celsius"]) for o in listed] == signs


def test_a_multipart_upload_imports_like_a_raw_body(client, account):
    response = client.post(
        "/users/me/import",
        headers=account.headers,
        files={"file": ("drip-data-2025-04-20.csv", sample("drip-export.csv"), "text/csv")},
    )
    assert response.status_code == 200, response.text
    assert her_periods(client, account) == EXPECTED_PERIODS


def test_a_named_format_is_used_and_a_wrong_one_is_422(client, account):
    wrong = import_file(client, account, sample("flo-export.json"), format="drip")
    assert wrong.status_code == 422 and wrong.json()["code"] == "malformed_file"
    named = import_file(client, account, sample("flo-export.json"), format="flo")
    assert named.status_code == 200 and named.json()["format"] == "flo"
    unknown = import_file(client, account, b"{}", format="fitbit")
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "format"]


def test_dry_run_reports_the_import_and_writes_nothing(client, account):
    dry = import_file(client, account, sample("clue-measurements.json"), dry_run="true")
    assert dry.status_code == 200
    assert dry.json()["dry_run"] is True
    assert dry.json()["periods"]["count"] == 4 and dry.json()["moods"]["count"] == 7
    assert her_periods(client, account) == [] and her_moods(client, account) == []
    real = import_file(client, account, sample("clue-measurements.json")).json()
    assert {**real, "dry_run": True} == dry.json()


def test_importing_the_same_file_twice_adds_nothing_the_second_time(client, account):
    assert import_file(client, account, sample("flo-export.json")).json()["periods"]["count"] == 4
    again = import_file(client, account, sample("flo-export.json")).json()
    assert again["periods"]["count"] == again["moods"]["count"] == 0
    reasons = {(entry["what"], entry["reason"], entry["count"]) for entry in again["skipped"]}
    assert ("period", "overlaps a period she already logged", 4) in reasons
    assert ("mood", "she already logged that day's mood", 7) in reasons
    assert her_periods(client, account) == EXPECTED_PERIODS
    assert len(her_moods(client, account)) == 7


def test_what_she_already_has_wins(client, account):
    logged = {"start_date": "2025-03-05", "end_date": "2025-03-08", "notes": "mine"}
    assert client.post("/periods/", headers=account.headers, json=logged).status_code == 201
    mood = {"date": "2025-01-16", "energy_level": 1, "notes": "my own words"}
    assert client.post("/moods/", headers=account.headers, json=mood).status_code == 201
    report = import_file(client, account, sample("drip-export.csv")).json()
    assert report["periods"]["count"] == 3 and report["moods"]["count"] == 6
    periods = client.get("/periods/", headers=account.headers).json()
    assert [
        (p["start_date"], p["notes"]) for p in periods if p["start_date"].startswith("2025-03")
    ] == [("2025-03-05", "mine")]
    [kept] = [
        m
        for m in client.get("/moods/", headers=account.headers).json()
        if m["date"] == "2025-01-16"
    ]
    assert (kept["energy_level"], kept["notes"]) == (1, "my own words")


def test_the_future_is_not_imported(client, account):
    tomorrow = day(1)
    export = {
        "user": {},
        "profile": None,
        "periods": [{"start_date": tomorrow, "end_date": None, "notes": None}],
        "moods": [{"date": tomorrow, "energy_level": 1, "notes": None, "day_of_cycle": None}],
    }
    report = import_file(client, account, json.dumps(export).encode()).json()
    assert report["periods"]["count"] == report["moods"]["count"] == 0
    assert {(entry["what"], entry["reason"]) for entry in report["skipped"]} == {
        ("period", "starts in the future"),
        ("mood", "in the future"),
    }


# ── bad files ──


def test_a_file_in_no_known_format_is_422_naming_the_formats_tried(client, account):
    for content in (b"hello, world\n", b'{"some": "json"}', b"\x00\x01\x02binary", b"[1, 2]"):
        response = import_file(client, account, content)
        assert response.status_code == 422, content
        body = response.json()
        assert body["code"] == "unknown_format"
        assert "drip" in body["detail"] and "apple_health" in body["detail"]


def test_an_empty_file_is_422(client, account):
    response = import_file(client, account, b"")
    assert response.status_code == 422 and response.json()["code"] == "malformed_file"


def test_a_malformed_row_is_422_with_its_line_and_nothing_is_stored(client, account):
    lines = sample("drip-export.csv").decode().split("\n")
    lines[3] = lines[3].replace(",2,false,", ",7,false,", 1)  # bleeding.value 7 on line 4
    response = import_file(client, account, "\n".join(lines).encode())
    assert response.status_code == 422
    assert response.json()["code"] == "malformed_file"
    assert "line 4" in response.json()["detail"] and "bleeding.value" in response.json()["detail"]
    assert her_periods(client, account) == [] and her_moods(client, account) == []


def test_a_malformed_element_is_422_with_its_number(client, account):
    measurements = json.loads(sample("clue-measurements.json"))
    measurements[5]["date"] = "yesterday"
    response = import_file(client, account, json.dumps(measurements).encode())
    assert response.status_code == 422
    assert response.json()["detail"].startswith("The file cannot be imported: element 5.date")
    broken = import_file(client, account, sample("flo-export.json")[:-40])
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]
    assert her_periods(client, account) == []


@pytest.mark.parametrize(
    "document",
    [
        # XXE: an external entity that would read a file of the server
        b'<?xml version="1.0"?><!DOCTYPE HealthData [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
        b'<HealthData><Record type="&secret;" startDate="2025-01-01" endDate="2025-01-01"/>'
        b"</HealthData>",
        # billion laughs: entities that expand to gigabytes
        b'<?xml version="1.0"?><!DOCTYPE HealthData [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8)
        )
        + b"]><HealthData>&i;</HealthData>",
    ],
    ids=["xxe", "billion-laughs"],
)
def test_xml_entities_are_never_expanded(client, account, document):
    response = import_file(client, account, document)
    assert response.status_code == 422
    assert "entities" in response.json()["detail"]
    assert "root:" not in response.text


def test_a_zip_with_two_xml_documents_is_422(client, account):
    xml = sample("apple-health-export.xml")
    response = import_file(client, account, apple_health_zip(xml, ("other/export.xml", xml)))
    assert response.status_code == 422 and "2 XML documents" in response.json()["detail"]


def test_a_zip_bomb_is_413_before_it_is_unpacked(client, account):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("apple_health_export/export.xml", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(b"\0" * 1024 * 1024)  # 200 MB of zeros: ~200 KB deflated
    response = import_file(client, account, buffer.getvalue())
    assert response.status_code == 413 and response.json()["code"] == "file_too_large"


def test_a_gzip_bomb_is_413(client, account):
    bomb = gzip.compress(b"[" + b" " * (IMPORT_MAX_JSON_BYTES + 10) + b"]")
    response = import_file(client, account, bomb)
    assert response.status_code == 413 and response.json()["code"] == "file_too_large"


def test_a_file_over_import_max_bytes_is_413(database_url):
    app = create_app(make_settings(database_url, import_max_bytes=4000))
    with TestClient(app) as small:
        account = create_account(small)
        response = import_file(small, account, sample("drip-export.csv") * 2)
        assert response.status_code == 413 and response.json()["code"] == "body_too_large"
        assert "4000 bytes" in response.json()["detail"]
        assert import_file(small, account, sample("drip-export.csv")).status_code == 200
        # the other endpoints keep their 1 MiB
        big = small.post("/moods/", headers=account.headers, content=b" " * (1024 * 1024 + 1))
        assert big.status_code == 413


def test_an_import_is_all_or_nothing(client, account):
    """A failure after the periods are written (here: the database refusing a mood) stores
    none of the file."""
    database = client.app.state.database
    if database.dialect == "sqlite":
        trigger = [
            "CREATE TRIGGER refuse_a_mood BEFORE INSERT ON daily_moods "
            "WHEN NEW.date = '2025-03-19' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
        drop = ["DROP TRIGGER refuse_a_mood"]
    else:
        trigger = [
            "CREATE FUNCTION refuse_a_mood() RETURNS trigger AS $$ BEGIN "
            "IF NEW.date = '2025-03-19' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '55P03'; "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_a_mood BEFORE INSERT ON daily_moods "
            "FOR EACH ROW EXECUTE FUNCTION refuse_a_mood()",
        ]
        drop = ["DROP TRIGGER refuse_a_mood ON daily_moods", "DROP FUNCTION refuse_a_mood()"]
    for statement in trigger:
        run(client, database.execute, statement)
    try:
        status = import_file(client, account, sample("drip-export.csv")).status_code
    except sa.exc.IntegrityError:  # SQLite's trigger: the test client raises the app's 500
        status = 500
    finally:
        for statement in drop:
            run(client, database.execute, statement)
    assert status >= 500
    assert her_periods(client, account) == [] and her_moods(client, account) == []
    assert import_file(client, account, sample("drip-export.csv")).status_code == 200
    assert her_periods(client, account) == EXPECTED_PERIODS


# ── her model, the audit trail, the round trip ──


def test_her_model_is_retrained_once_after_the_import_and_the_import_is_audited(client, account):
    periods, moods = generate_demo_history(3650, utc_today(), seed=4)
    export = {
        "user": {},
        "profile": None,
        "periods": [
            {"start_date": p.start.isoformat(), "end_date": p.end.isoformat(), "notes": None}
            for p in periods
        ],
        "moods": [
            {"date": d.isoformat(), "energy_level": level, "notes": None, "day_of_cycle": None}
            for d, level in moods
        ],
    }
    report = import_file(client, account, json.dumps(export).encode()).json()
    assert report["periods"]["count"] == len(periods) and report["moods"]["count"] == len(moods)
    drain_training(client)
    models = client.get("/users/me/export", headers=account.headers).json()["models"]
    assert [model["version"] for model in models] == [1]
    audit = run(
        client,
        client.app.state.database.fetch_all,
        sa.select(audit_events).where(
            audit_events.c.user_id == account.user["id"],
            audit_events.c.action == "import",
        ),
    )
    assert [(event["target"], event["ok"]) for event in audit] == [("planher", True)]


def comparable(export: dict) -> dict:
    """An export without what a new account must differ in (ids, timestamps, the user)."""
    return {
        "profile": {
            key: value
            for key, value in (export["profile"] or {}).items()
            if key not in ("created_at", "updated_at")
        },
        "periods": [
            {key: value for key, value in p.items() if key not in ("id", "created_at")}
            for p in export["periods"]
        ],
        "moods": [
            {key: value for key, value in m.items() if key not in ("id", "created_at")}
            for m in export["moods"]
        ],
        "observations": [
            {key: value for key, value in o.items() if key not in ("id", "created_at")}
            for o in export["observations"]
        ],
    }


def test_export_delete_register_import_export_gives_the_same_history(client):
    account = create_account(client)
    profile = {"height_cm": 170, "weight_kg": 64.25, "cycle_length": 30, "luteal_length": 13}
    assert client.post("/profiles/me", headers=account.headers, json=profile).status_code == 201
    log_generated_history(client, account, 120, seed=7)
    client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-300), "notes": "a\nb"}
    )
    # a mood no period covers keeps the day of cycle she gave
    client.post(
        "/moods/",
        headers=account.headers,
        json={"date": day(-400), "energy_level": 1, "notes": "tab\there", "day_of_cycle": 12},
    )
    for offset, sign in (
        (-20, {"lh_test": "positive"}),
        (-19, {"bbt_celsius": 36.85}),
        (-18, {"cervical_mucus": "egg_white", "notes": "peak?"}),
    ):
        body = {"date": day(offset), **sign}
        assert client.post("/observations/", headers=account.headers, json=body).status_code == 201
    before = client.get("/users/me/export", headers=account.headers).json()
    assert client.delete("/users/me", headers=account.headers).status_code == 204

    again = client.post("/auth/register", json={"email": account.email, "password": PASSWORD})
    assert again.status_code == 201
    headers = bearer(login(client, account.email)["access_token"])
    response = client.post("/users/me/import", headers=headers, content=json.dumps(before))
    assert response.status_code == 200, response.text
    assert response.json()["profile"] == {
        "found": {key: before["profile"][key] for key in PROFILE_FIELDS},
        "applied": True,
    }
    after = client.get("/users/me/export", headers=headers).json()
    assert comparable(after) == comparable(before)
    assert len(after["moods"]) == len(before["moods"]) > 100
    assert len(after["observations"]) == 3


# ── retention ──


def test_an_import_leaves_out_what_her_retention_would_delete(client, account):
    client.put("/users/me", headers=account.headers, json={"retention_days": 365})
    recent = dt.date.fromisoformat(day(-30))
    export = {
        "user": {},
        "profile": None,
        "periods": [{"start_date": "2025-01-06", "end_date": "2025-01-10", "notes": None}],
        "moods": [
            {"date": "2025-01-08", "energy_level": 0, "notes": None, "day_of_cycle": None},
            {"date": recent.isoformat(), "energy_level": 2, "notes": None, "day_of_cycle": None},
        ],
    }
    report = import_file(client, account, json.dumps(export).encode()).json()
    assert report["periods"]["count"] == 0 and report["moods"]["count"] == 1
    reasons = {(entry["what"], entry["reason"]) for entry in report["skipped"]}
    assert ("mood", "older than her retention_days keep") in reasons
