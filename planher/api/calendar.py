"""Her calendar feed: create, delete, and the secret feed itself."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import everyones_cycles
from planher.calendar_feed import Reminder, calendar_feed_ics
from planher.clock import today_in, utc_now
from planher.config import CALENDAR_FEED_TOKEN_BYTES
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.ovulation import FertilitySign
from planher.errors import APIError
from planher.schemas.requests import CalendarFeedBody, CalendarFeedUpdateBody
from planher.schemas.responses import CalendarFeedOut, CalendarFeedReminderOut
from planher.security.audit import audit_event
from planher.storage.queries import fetch_profile, periods_and_signs_of
from planher.storage.tables import audit_events, calendar_feeds, period_records, users
from planher.web.endpoint import endpoint


def calendar_feed_hash(feed_token: str) -> str:
    return hashlib.sha256(feed_token.encode("utf-8")).hexdigest()


@endpoint(
    "Create her secret calendar feed URL (a new one replaces the old)",
    ok=(201, CalendarFeedOut),
    body=CalendarFeedBody,
)
async def create_calendar_feed(request: Request, body: CalendarFeedBody) -> Any:
    database, user_id = request.app.state.database, request.user.id
    feed_token = secrets.token_urlsafe(CALENDAR_FEED_TOKEN_BYTES)
    event = audit_event(request, "calendar_feed_created", ok=True)
    feed = {"token_hash": calendar_feed_hash(feed_token), **body.model_dump()}
    await database.write(replace_feed, user_id, feed, event)
    return {"url": f"{request.base_url}calendar/{feed_token}.ics", **body.model_dump()}


def replace_feed(
    connection: sa.Connection, user_id: int, feed: dict[str, Any] | None, event: dict[str, Any]
) -> None:
    """A unit of work: her feed replaced by a new one (or, without `feed`, revoked), and
    that audited."""
    connection.execute(calendar_feeds.delete().where(calendar_feeds.c.user_id == user_id))
    if feed is not None:
        connection.execute(
            calendar_feeds.insert().values(user_id=user_id, **feed, created_at=utc_now())
        )
    connection.execute(audit_events.insert().values(event))


@endpoint(
    "Change her feed's reminders; the URL stays, so her calendar apps need no new subscription",
    ok=(200, CalendarFeedReminderOut),
    body=CalendarFeedUpdateBody,
    errors={404: "She has no calendar feed"},
)
async def update_calendar_feed(request: Request, body: CalendarFeedUpdateBody) -> Any:
    changed = await request.app.state.database.fetch_one(
        calendar_feeds.update()
        .where(calendar_feeds.c.user_id == request.user.id)
        .values(**body.model_dump())
        .returning(calendar_feeds.c.remind_days_before)
    )
    if changed is None:
        raise APIError(404, "not_found", "No calendar feed: create one first")
    return changed


@endpoint("Revoke her calendar feed URL", ok=(204, None))
async def delete_calendar_feed(request: Request) -> Response:
    event = audit_event(request, "calendar_feed_revoked", ok=True)
    await request.app.state.database.write(replace_feed, request.user.id, None, event)
    return Response(status_code=204)


CALENDAR_FEED_OWNER = (
    sa.select(
        users.c.id, users.c.time_zone, users.c.created_at, calendar_feeds.c.remind_days_before
    )
    .select_from(users.join(calendar_feeds, calendar_feeds.c.user_id == users.c.id))
    .where(calendar_feeds.c.token_hash == sa.bindparam("token_hash"))
)


@endpoint(
    "Her calendar of periods, predictions and fertile windows (the feed URL is the key)",
    ok=(200, str),
    auth=None,
    media_type="text/calendar",
    errors={404: "No such feed, or revoked", 503: "The database is unavailable"},
)
async def calendar_feed(request: Request) -> Response:
    database = request.app.state.database
    owner = await database.fetch_one(
        CALENDAR_FEED_OWNER,
        {"token_hash": calendar_feed_hash(request.path_params["feed_token"])},
    )
    if owner is None:
        raise APIError(404, "not_found", "No such calendar feed: it may have been revoked")
    periods = await database.fetch_large(
        sa.select(
            period_records.c.id,
            period_records.c.start_date,
            period_records.c.end_date,
            period_records.c.excluded,
        )
        .where(period_records.c.user_id == owner["id"])
        .order_by(period_records.c.start_date)
    )
    _, signs = await database.read(periods_and_signs_of, owner["id"])
    calendar = CycleCalendar.build(
        [PeriodSpan(row["start_date"], row["end_date"], row["excluded"]) for row in periods],
        await fetch_profile(database, owner["id"]),
        [FertilitySign(**sign) for sign in signs],
        everyones_cycles(request),
    )
    # Opaque, stable per user, and no use to anyone: UIDs must not carry her account id.
    feed_key = hashlib.sha256(f"{owner['id']}:{owner['created_at']}".encode()).hexdigest()[:16]
    reminder = None
    if owner["remind_days_before"] is not None:
        reminder = Reminder(owner["remind_days_before"], owner["time_zone"])
    today = today_in(owner["time_zone"])
    body = calendar_feed_ics(periods, calendar, today, feed_key, utc_now(), reminder)
    return Response(body, media_type="text/calendar; charset=utf-8")
