"""What the endpoint groups share: her calendar, her today, owned rows and list pages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from planher.clock import today_in, utc_now
from planher.config import MAX_DATABASE_ID
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.ovulation import FertilitySign
from planher.cycles.population import CyclePopulation
from planher.energy.features import mood_cycle_day
from planher.errors import APIError
from planher.schemas.requests import ListQuery
from planher.storage.database import first_row
from planher.storage.queries import (
    Listing,
    insert_new,
    logged_on,
    owned_row,
    page_of,
    periods_and_signs_of,
    profile_of,
)
from planher.web.endpoint import Reply, rule_errors
from planher.web.request_errors import RequestValidationError


def calendar_of(
    connection: sa.Connection, user_id: int, population: CyclePopulation
) -> CycleCalendar:
    """Her cycles: her periods, profile and observations, and everyone's cycles (`population`)
    for what hers do not say yet."""
    periods, signs = periods_and_signs_of(connection, user_id)
    return CycleCalendar.build(
        [PeriodSpan(*period) for period in periods],
        profile_of(connection, user_id),
        [FertilitySign(**sign) for sign in signs],
        population,
    )


def page_and_calendar(
    connection: sa.Connection,
    listing: Listing,
    page: ListQuery,
    user_id: int,
    population: CyclePopulation,
) -> tuple[list[dict[str, Any]], int, CycleCalendar]:
    """A page of her rows, their total, and her cycles to place them in: one read."""
    return *page_of(connection, listing, page, user_id), calendar_of(
        connection, user_id, population
    )


def everyones_cycles(request: Request) -> CyclePopulation:
    """The population learned last from every woman's cycles."""
    return request.app.state.cycle_population.current


async def her_calendar(request: Request) -> CycleCalendar:
    """The signed-in woman's cycles."""
    return await request.app.state.database.read(
        calendar_of, request.user.id, everyones_cycles(request)
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


async def insert_her_day(
    request: Request,
    table: sa.Table,
    fields: dict[str, Any],
    conflict: Callable[[dt.date], APIError],
) -> dict[str, Any]:
    """Her new row of a one-a-day table (moods, observations), or `conflict` (409) if she
    has one on that date: the check and the write in one statement, one round trip."""
    database, now = request.app.state.database, utc_now()
    new = {"user_id": request.user.id, **fields, "created_at": now, "updated_at": now}
    row = await database.fetch_one(insert_new(database.dialect, table, new))
    if row is None:
        raise conflict(fields["date"])
    return row


def change_her_day(
    connection: sa.Connection,
    table: sa.Table,
    what: str,
    row_id: int,
    user_id: int,
    changes: dict[str, Any],
    today: dt.date,
    conflict: Callable[[dt.date], APIError],
    check: Callable[[dict[str, Any]], None] = lambda changed: None,
) -> dict[str, Any]:
    """A unit of work: change her row of a one-a-day table (moods, observations). 404 if it
    is not hers; `check` sees the row as changed; a new date must not be in the future (422)
    nor one she already logged (`conflict`)."""
    current = owned_row(connection, table, row_id, user_id, what)
    check({**current, **changes})
    if "date" in changes and changes["date"] != current["date"]:
        check_not_in_the_future(changes["date"], today)
        if logged_on(connection, table, user_id, changes["date"]):
            raise conflict(changes["date"])
    changed = connection.execute(
        table.update()
        .where(table.c.id == row_id)
        .values(**changes, updated_at=utc_now())
        .returning(*table.c)
    )
    return first_row(changed)
