"""/moods: her daily energy."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import (
    check_not_in_the_future,
    delete_owned,
    her_calendar,
    her_today,
    list_response,
    mood_out,
    path_id,
)
from planher.clock import utc_now
from planher.errors import APIError
from planher.schemas.requests import ListQuery, MoodBody, MoodUpdateBody
from planher.schemas.responses import MoodOut
from planher.storage.database import UNIQUE_VIOLATIONS
from planher.storage.queries import (
    Listing,
    fetch_owned,
    list_page,
    logged_on,
    user_write_transaction,
)
from planher.storage.tables import daily_moods
from planher.web.endpoint import endpoint

MOODS = Listing(daily_moods, daily_moods.c.date)


def mood_conflict(date: dt.date) -> APIError:
    return APIError(409, "mood_exists", f"A mood is already logged for {date}; change that one")


@endpoint("Her moods, newest first", ok=(200, list[MoodOut]), query=ListQuery)
async def list_moods(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, MOODS, query, request.user.id)
    calendar = await her_calendar(request)
    return list_response([mood_out(row, calendar) for row in rows], total)


@endpoint(
    "Log a day's energy",
    ok=(201, MoodOut),
    body=MoodBody,
    errors={409: "A mood is already logged for that date"},
)
async def create_mood(request: Request, body: MoodBody) -> Any:
    today = her_today(request)
    fields = {**body.model_dump(), "date": body.date or today}
    check_not_in_the_future(fields["date"], today)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    try:
        async with user_write_transaction(database, user_id):
            if await logged_on(database, daily_moods, user_id, fields["date"]):
                raise mood_conflict(fields["date"])
            row = await database.fetch_one(
                daily_moods.insert()
                .values(user_id=user_id, **fields, created_at=now, updated_at=now)
                .returning(*daily_moods.c)
            )
    except UNIQUE_VIOLATIONS:
        raise mood_conflict(fields["date"]) from None
    request.app.state.trainer.schedule(user_id)
    return mood_out(row, await her_calendar(request))


@endpoint(
    "Change a mood",
    ok=(200, MoodOut),
    body=MoodUpdateBody,
    errors={404: "Mood not found", 409: "A mood is already logged for that date"},
)
async def update_mood(request: Request, body: MoodUpdateBody) -> Any:
    mood_id = path_id(request)
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_owned(database, daily_moods, mood_id, user_id, "Mood")
        if "date" in changes and changes["date"] != current["date"]:
            check_not_in_the_future(changes["date"], her_today(request))
            if await logged_on(database, daily_moods, user_id, changes["date"]):
                raise mood_conflict(changes["date"])
        row = await database.fetch_one(
            daily_moods.update()
            .where(daily_moods.c.id == mood_id)
            .values(**changes, updated_at=utc_now())
            .returning(*daily_moods.c)
        )
    request.app.state.trainer.schedule(user_id)
    return mood_out(row, await her_calendar(request))


@endpoint("Delete a mood", ok=(204, None), errors={404: "Mood not found"})
async def delete_mood(request: Request) -> Response:
    response = await delete_owned(request, daily_moods, "Mood")
    request.app.state.trainer.schedule(request.user.id)
    return response
