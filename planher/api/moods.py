"""/moods: her daily energy."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import (
    change_her_day,
    check_not_in_the_future,
    delete_owned,
    everyones_cycles,
    her_calendar,
    her_today,
    insert_her_day,
    list_response,
    mood_out,
    page_and_calendar,
    path_id,
)
from planher.errors import APIError
from planher.schemas.requests import ListQuery, MoodBody, MoodUpdateBody
from planher.schemas.responses import MoodOut
from planher.storage.database import UNIQUE_VIOLATIONS
from planher.storage.queries import Listing
from planher.storage.tables import daily_moods
from planher.web.endpoint import endpoint

MOODS = Listing(daily_moods, daily_moods.c.date)


def mood_conflict(date: dt.date) -> APIError:
    return APIError(409, "mood_exists", f"A mood is already logged for {date}; change that one")


@endpoint("Her moods, newest first", ok=(200, list[MoodOut]), query=ListQuery)
async def list_moods(request: Request, query: ListQuery) -> Any:
    rows, total, calendar = await request.app.state.database.read(
        page_and_calendar, MOODS, query, request.user.id, everyones_cycles(request)
    )
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
    row = await insert_her_day(request, daily_moods, fields, mood_conflict)
    request.app.state.trainer.schedule(request.user.id)
    return mood_out(row, await her_calendar(request))


@endpoint(
    "Change a mood",
    ok=(200, MoodOut),
    body=MoodUpdateBody,
    errors={404: "Mood not found", 409: "A mood is already logged for that date"},
)
async def update_mood(request: Request, body: MoodUpdateBody) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    try:
        row = await database.write(
            change_her_day,
            daily_moods,
            "Mood",
            path_id(request),
            user_id,
            changes,
            her_today(request),
            mood_conflict,
        )
    except UNIQUE_VIOLATIONS:  # another request moved a mood onto that date at once
        raise mood_conflict(changes["date"]) from None
    request.app.state.trainer.schedule(user_id)
    return mood_out(row, await her_calendar(request))


@endpoint("Delete a mood", ok=(204, None), errors={404: "Mood not found"})
async def delete_mood(request: Request) -> Response:
    response = await delete_owned(request, daily_moods, "Mood")
    request.app.state.trainer.schedule(request.user.id)
    return response
