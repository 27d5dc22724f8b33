"""/periods: the periods she logs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import (
    calendar_of,
    delete_owned,
    everyones_cycles,
    her_today,
    list_response,
    page_and_calendar,
    path_id,
    period_out,
)
from planher.clock import utc_now
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.population import CyclePopulation
from planher.cycles.rules import period_problems
from planher.errors import APIError
from planher.schemas.requests import ListQuery, PeriodBody, PeriodUpdateBody
from planher.schemas.responses import PeriodOut
from planher.storage.database import UNIQUE_VIOLATIONS, first_row
from planher.storage.queries import Listing, lock_her_writes, owned_row
from planher.storage.tables import period_records
from planher.web.endpoint import endpoint, rule_errors

PERIODS = Listing(period_records, period_records.c.start_date)


def overlap_conflict(period: PeriodSpan) -> APIError:
    ends = f" to {period.end}" if period.end else " (no end logged yet)"
    return APIError(
        409,
        "period_overlap",
        f"This period overlaps the one from {period.start}{ends}; edit that one instead",
    )


@endpoint("Her periods, newest first", ok=(200, list[PeriodOut]), query=ListQuery)
async def list_periods(request: Request, query: ListQuery) -> Any:
    rows, total, calendar = await request.app.state.database.read(
        page_and_calendar,
        PERIODS,
        query,
        request.user.id,
        everyones_cycles(request),
    )
    return list_response([period_out(row, calendar) for row in rows], total)


@endpoint(
    "Log a period",
    ok=(201, PeriodOut),
    body=PeriodBody,
    errors={409: "Overlaps a logged period"},
)
async def create_period(request: Request, body: PeriodBody) -> Any:
    if problems := period_problems(body.start_date, body.end_date, her_today(request)):
        raise rule_errors(problems)
    database = request.app.state.database
    try:
        return await database.write(
            log_period,
            request.user.id,
            body.model_dump(),
            everyones_cycles(request),
        )
    except UNIQUE_VIOLATIONS:  # the same start logged twice at once
        raise APIError(
            409, "period_overlap", "A period starting on that day is already logged"
        ) from None


def log_period(
    connection: sa.Connection, user_id: int, fields: dict, population: CyclePopulation
) -> dict[str, Any]:
    lock_her_writes(connection, user_id)
    calendar = calendar_of(connection, user_id, population)
    if clash := calendar.overlapping(PeriodSpan(fields["start_date"], fields["end_date"])):
        raise overlap_conflict(clash)
    now = utc_now()
    row = connection.execute(
        period_records.insert()
        .values(user_id=user_id, **fields, created_at=now, updated_at=now)
        .returning(*period_records.c)
    )
    return period_out(first_row(row), calendar)


def change_period(
    connection: sa.Connection,
    period_id: int,
    user_id: int,
    changes: dict,
    today: dt.date,
    population: CyclePopulation,
) -> dict[str, Any]:
    lock_her_writes(connection, user_id)
    current = owned_row(connection, period_records, period_id, user_id, "Period")
    updated = PeriodSpan(
        changes.get("start_date", current["start_date"]),
        changes.get("end_date", current["end_date"]),
        changes.get("excluded", current["excluded"]),
    )
    if problems := period_problems(updated.start, updated.end, today):
        raise rule_errors(problems)
    calendar = calendar_of(connection, user_id, population)
    if clash := calendar.overlapping(updated, ignore_start=current["start_date"]):
        raise overlap_conflict(clash)
    row = connection.execute(
        period_records.update()
        .where(period_records.c.id == period_id)
        .values(**changes, updated_at=utc_now())
        .returning(*period_records.c)
    )
    moved = [period for period in calendar.periods if period.start != current["start_date"]]
    calendar = CycleCalendar.build(
        [*moved, updated], calendar.profile, population=calendar.population
    )
    return period_out(first_row(row), calendar)


@endpoint(
    "Change a period",
    ok=(200, PeriodOut),
    body=PeriodUpdateBody,
    errors={404: "Period not found", 409: "Overlaps a logged period"},
)
async def update_period(request: Request, body: PeriodUpdateBody) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    return await request.app.state.database.write(
        change_period,
        path_id(request),
        request.user.id,
        changes,
        her_today(request),
        everyones_cycles(request),
    )


@endpoint("Delete a period", ok=(204, None), errors={404: "Period not found"})
async def delete_period(request: Request) -> Response:
    return await delete_owned(request, period_records, "Period")
