"""Users: her calendar feed — POST/DELETE /users/me/calendar-feed, GET /calendar/{token}.ics."""

import datetime as dt
import itertools
import zoneinfo
from urllib.parse import urlsplit

import icalendar

from conftest import bearer, create_account, day
from planher.config import CALENDAR_PREDICTED_PERIODS


def feed_path(client, account) -> str:
    response = client.post("/users/me/calendar-feed", headers=account.headers)
    assert response.status_code == 201, response.text
    url = urlsplit(response.json()["url"])
    assert url.path.startswith("/calendar/") and url.path.endswith(".ics")
    return url.path


def events_of(response) -> list:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    calendar = icalendar.Calendar.from_ical(response.content)  # RFC 5545, or it raises
    return list(calendar.walk("VEVENT"))


def by_summary(events) -> dict[str, list]:
    found: dict[str, list] = {}
    for event in events:
        found.setdefault(str(event["SUMMARY"]), []).append(event)
    return found


def log_cycles(client, account, starts=(-58, -30, -2)) -> None:
    for offset in starts:
        body = {"start_date": day(offset), "end_date": day(min(offset + 4, 0))}
        assert client.post("/periods/", headers=account.headers, json=body).status_code == 201


def test_the_feed_serves_her_periods_the_next_six_predicted_and_fertile_windows(client, account):
    log_cycles(client, account, starts=(-60, -32, -4))
    path = feed_path(client, account)
    events = by_summary(events_of(client.get(path)))  # no Authorization header at all
    assert sorted(str(e["DTSTART"].dt) for e in events["Period"]) == [day(-60), day(-32), day(-4)]
    predicted, fertile = events["Period (predicted)"], events["Fertile window (estimated)"]
    assert len(predicted) == len(fertile) == CALENDAR_PREDICTED_PERIODS
    starts = sorted(event["DTSTART"].dt for event in predicted)
    assert starts[0] == dt.date.fromisoformat(day(-4)) + dt.timedelta(days=28)
    assert {(later - earlier).days for earlier, later in itertools.pairwise(starts)} == {28}
    for event in events["Period"] + predicted + fertile:
        # all-day events: dates, not times, and the end is the day after the last
        assert type(event["DTSTART"].dt) is dt.date and type(event["DTEND"].dt) is dt.date
        assert event["DTEND"].dt > event["DTSTART"].dt
    first = min(predicted, key=lambda event: event["DTSTART"].dt)
    assert "likely between" in str(first["DESCRIPTION"])
    assert str(first["DESCRIPTION"]).count(str(starts[0].year)) >= 2


def test_uids_are_unique_and_stable_so_calendars_update_rather_than_duplicate(client, account):
    log_cycles(client, account)
    path = feed_path(client, account)
    first = {str(e["UID"]): e for e in events_of(client.get(path))}
    assert len(first) == 3 + 2 * CALENDAR_PREDICTED_PERIODS
    # a change that moves the predictions keeps their UIDs: the events are updated
    profile = {"height_cm": 165, "weight_kg": 60, "cycle_length": 33}
    assert client.post("/profiles/me", headers=account.headers, json=profile).status_code == 201
    second = {str(e["UID"]): e for e in events_of(client.get(path))}
    assert second.keys() == first.keys()
    moved = [uid for uid in first if first[uid]["DTSTART"].dt != second[uid]["DTSTART"].dt]
    assert moved and all("predicted" in uid or "fertile" in uid for uid in moved)


def test_a_new_feed_url_replaces_the_old_and_a_revoked_one_is_404(client, account):
    old = feed_path(client, account)
    new = feed_path(client, account)
    assert old != new
    assert client.get(old).status_code == 404
    assert client.get(new).status_code == 200
    assert client.delete("/users/me/calendar-feed", headers=account.headers).status_code == 204
    gone = client.get(new)
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert client.get("/calendar/made-up-token.ics").status_code == 404


def test_the_feed_token_grants_nothing_else_and_shows_only_her(client, account):
    log_cycles(client, account)
    stranger = create_account(client)
    client.post("/periods/", headers=stranger.headers, json={"start_date": day(-10)})
    path = feed_path(client, account)
    token = path.removeprefix("/calendar/").removesuffix(".ics")
    assert client.get("/users/me", headers=bearer(token)).status_code == 401
    assert client.get("/users/me/export", headers=bearer(token)).status_code == 401
    logged = by_summary(events_of(client.get(path)))["Period"]
    assert day(-10) not in {str(event["DTSTART"].dt) for event in logged}


def test_the_feed_endpoints_need_her_token(client):
    for method in ("POST", "DELETE"):
        assert client.request(method, "/users/me/calendar-feed").status_code == 401


def test_a_feed_with_nothing_logged_is_an_empty_calendar(client, account):
    assert events_of(client.get(feed_path(client, account))) == []


# ── reminders ──

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def alarms_by_period(client, path: str) -> dict[dt.date, list]:
    predicted = by_summary(events_of(client.get(path)))["Period (predicted)"]
    return {
        event["DTSTART"].dt: [alarm["TRIGGER"].dt for alarm in event.walk("VALARM")]
        for event in predicted
    }


def test_reminders_ring_at_nine_her_time_the_days_she_asked_before_each_predicted_period(
    client, account
):
    client.put("/users/me", headers=account.headers, json={"time_zone": "Europe/Berlin"})
    log_cycles(client, account, starts=(-60, -32, -4))
    created = client.post(
        "/users/me/calendar-feed", headers=account.headers, json={"remind_days_before": 2}
    )
    assert created.status_code == 201 and created.json()["remind_days_before"] == 2
    path = urlsplit(created.json()["url"]).path
    alarms = alarms_by_period(client, path)
    assert len(alarms) == CALENDAR_PREDICTED_PERIODS
    utc_hours = set()
    for start, triggers in alarms.items():
        [trigger] = triggers
        local = trigger.astimezone(BERLIN)
        assert (local.date(), local.time()) == (start - dt.timedelta(days=2), dt.time(9, 0))
        utc_hours.add(trigger.astimezone(dt.UTC).hour)
    # Six cycles ahead cross a daylight-saving change: 08:00Z in winter, 07:00Z in summer.
    assert utc_hours == {7, 8}
    event = next(iter(by_summary(events_of(client.get(path)))["Period (predicted)"]))
    [alarm] = event.walk("VALARM")
    assert str(alarm["ACTION"]) == "DISPLAY" and "predicted" in str(alarm["DESCRIPTION"])


def test_changing_reminders_keeps_her_feed_url_and_null_turns_them_off(client, account):
    log_cycles(client, account)
    path = feed_path(client, account)
    assert all(triggers == [] for triggers in alarms_by_period(client, path).values())
    changed = client.put(
        "/users/me/calendar-feed", headers=account.headers, json={"remind_days_before": 0}
    )
    assert changed.status_code == 200 and changed.json() == {"remind_days_before": 0}
    for start, [trigger] in alarms_by_period(client, path).items():  # the same URL
        assert trigger.astimezone(dt.UTC).date() == start  # UTC: 09:00 her time, that day
    off = client.put(
        "/users/me/calendar-feed", headers=account.headers, json={"remind_days_before": None}
    )
    assert off.status_code == 200 and off.json() == {"remind_days_before": None}
    assert all(triggers == [] for triggers in alarms_by_period(client, path).values())


def test_reminders_are_0_to_7_days_and_need_a_feed(client, account):
    for wrong in (8, -1, "2", 1.5):
        answer = client.put(
            "/users/me/calendar-feed", headers=account.headers, json={"remind_days_before": wrong}
        )
        assert answer.status_code == 422, wrong
    assert (
        client.put("/users/me/calendar-feed", headers=account.headers, json={}).status_code == 422
    )
    missing = client.put(
        "/users/me/calendar-feed", headers=account.headers, json={"remind_days_before": 1}
    )
    assert missing.status_code == 404
