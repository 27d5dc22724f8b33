"""What the endpoint groups share: her calendar, her today, owned rows and list pages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from planher.clock import today_in
from planher.config import MAX_DATABASE_ID
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.ovulation import FertilitySign
from planher.energy.features import mood_cycle_day
from planher.errors import APIError
from planher.storage.database import Database
from planher.storage.queries import SIGNS_OF, fetch_periods, fetch_profile
from planher.web.endpoint import Reply, rule_errors
from planher.web.request_errors import RequestValidationError


async def fetch_signs(database: Database, user_id: int) -> list[FertilitySign]:
    """Her observations as the cycle calculator reads them, oldest first."""
    return [
        FertilitySign(**row) for row in await database.fetch_all(SIGNS_OF, {"user_id": user_id})
    ]


async def her_calendar(request: Request) -> CycleCalendar:
    """The signed-in woman's cycles: her periods, profile and observations, and everyone's
    cycles for what hers do not say yet."""
    database, user_id = request.app.state.database, request.user.id
    rows = await fetch_periods(database, user_id)
    return CycleCalendar.build(
        [PeriodSpan(row["start_date"], row["end_date"]) for row in rows],
        await fetch_profile(database, user_id),
        await fetch_signs(database, user_id),
        request.app.state.cycle_prior,
    )


def her_today(request: Request) -> dt.date:
    """The signed-in woman's calendar date now, in her own time zone."""
    return today_in(request.user.account["time_zone"])


def path_id(request: Request) -> int:
    """The `{id}` of the path: 422 for a number no INTEGER column can hold."""
    row_id = request.path_params["id"]
    if row_id > MAX_DATABASE_ID:
        message = f"Input should be less than or equal to {MAX_DATABASE_ID}"
        raise RequestValidationError(
            [{"loc": ("id",), "msg": message, "type": "less_than_equal"}], "path"
        )
    return row_id


async def delete_owned(request: Request, table: sa.Table, what: str) -> Response:
    deleted = await request.app.state.database.fetch_one(
        table.delete()
        .where(table.c.id == path_id(request), table.c.user_id == request.user.id)
        .returning(table.c.id)
    )
    if deleted is None:
        raise APIError(404, "not_found", f"{what} not found")
    return Response(status_code=204)


def list_response(items: list[Any], total: int) -> Reply:
    return Reply(items, 200, {"X-Total-Count": str(total)})


def period_out(row: Mapping[str, Any], calendar: CycleCalendar) -> dict[str, Any]:
    """Her period as stored, with what only her other periods can tell: its cycle length."""
    return {**row, "cycle_length": calendar.cycle_length_from(row["start_date"])}


def mood_out(row: Mapping[str, Any], calendar: CycleCalendar) -> dict[str, Any]:
    """Her mood as stored, with its cycle day and phase as her periods now place it."""
    cycle = mood_cycle_day(calendar, row["date"], row["day_of_cycle"])
    return {
        **row,
        "day_of_cycle": None if cycle is None else cycle.day_of_cycle,
        "phase": None if cycle is None else cycle.phase,
    }


def check_not_in_the_future(date: dt.date, today: dt.date) -> None:
    if date > today:
        raise rule_errors([("date", f"date may not be in the future (after {today})")])
