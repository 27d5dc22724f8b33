"""/periods: the periods she logs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import (
    delete_owned,
    her_calendar,
    her_today,
    list_response,
    path_id,
    period_out,
)
from planher.clock import utc_now
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.rules import period_problems
from planher.errors import APIError
from planher.schemas.requests import ListQuery, PeriodBody, PeriodUpdateBody
from planher.schemas.responses import PeriodOut
from planher.storage.database import UNIQUE_VIOLATIONS
from planher.storage.queries import Listing, fetch_owned, list_page, user_write_transaction
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
    rows, total = await list_page(request.app.state.database, PERIODS, query, request.user.id)
    calendar = await her_calendar(request)
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
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    try:
        async with user_write_transaction(database, user_id):
            calendar = await her_calendar(request)
            if clash := calendar.overlapping(PeriodSpan(body.start_date, body.end_date)):
                raise overlap_conflict(clash)
            row = await database.fetch_one(
                period_records.insert()
                .values(user_id=user_id, **body.model_dump(), created_at=now, updated_at=now)
                .returning(*period_records.c)
            )
    except UNIQUE_VIOLATIONS:  # the same start logged twice at once
        raise APIError(
            409, "period_overlap", "A period starting on that day is already logged"
        ) from None
    return period_out(row, calendar)


@endpoint(
    "Change a period",
    ok=(200, PeriodOut),
    body=PeriodUpdateBody,
    errors={404: "Period not found", 409: "Overlaps a logged period"},
)
async def update_period(request: Request, body: PeriodUpdateBody) -> Any:
    period_id = path_id(request)
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_owned(database, period_records, period_id, user_id, "Period")
        updated = PeriodSpan(
            changes.get("start_date", current["start_date"]),
            changes.get("end_date", current["end_date"]),
        )
        if problems := period_problems(updated.start, updated.end, her_today(request)):
            raise rule_errors(problems)
        calendar = await her_calendar(request)
        if clash := calendar.overlapping(updated, ignore_start=current["start_date"]):
            raise overlap_conflict(clash)
        row = await database.fetch_one(
            period_records.update()
            .where(period_records.c.id == period_id)
            .values(**changes, updated_at=utc_now())
            .returning(*period_records.c)
        )
    moved = [period for period in calendar.periods if period.start != current["start_date"]]
    calendar = CycleCalendar.build([*moved, updated], calendar.profile, prior=calendar.prior)
    return period_out(row, calendar)


@endpoint("Delete a period", ok=(204, None), errors={404: "Period not found"})
async def delete_period(request: Request) -> Response:
    return await delete_owned(request, period_records, "Period")
