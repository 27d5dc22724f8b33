"""/observations: LH tests, temperatures and cervical mucus."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import (
    change_her_day,
    check_not_in_the_future,
    delete_owned,
    her_today,
    insert_her_day,
    list_response,
    path_id,
)
from planher.errors import APIError
from planher.schemas.requests import (
    OBSERVATION_SIGNS,
    ListQuery,
    ObservationBody,
    ObservationUpdateBody,
)
from planher.schemas.responses import ObservationOut
from planher.storage.database import UNIQUE_VIOLATIONS
from planher.storage.queries import Listing, list_page
from planher.storage.tables import observations
from planher.web.endpoint import endpoint
from planher.web.request_errors import RequestValidationError

OBSERVATIONS = Listing(observations, observations.c.date)


def check_signs(fields: Mapping[str, Any]) -> None:
    if all(fields.get(name) is None for name in OBSERVATION_SIGNS):
        message = "Give at least one of lh_test, bbt_celsius and cervical_mucus"
        raise RequestValidationError([{"loc": (), "msg": message, "type": "missing"}], "body")


def observation_conflict(date: dt.date) -> APIError:
    return APIError(
        409, "observation_exists", f"An observation is already logged for {date}; change that one"
    )


@endpoint(
    "Her fertility observations, newest first", ok=(200, list[ObservationOut]), query=ListQuery
)
async def list_observations(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, OBSERVATIONS, query, request.user.id)
    return list_response(rows, total)


@endpoint(
    "Log a day's fertility signs (an LH test, her temperature, her mucus)",
    ok=(201, ObservationOut),
    body=ObservationBody,
    errors={409: "An observation is already logged for that date"},
)
async def create_observation(request: Request, body: ObservationBody) -> Any:
    today = her_today(request)
    fields = {**body.model_dump(), "date": body.date or today}
    check_not_in_the_future(fields["date"], today)
    check_signs(fields)
    return await insert_her_day(request, observations, fields, observation_conflict)


@endpoint(
    "Change an observation",
    ok=(200, ObservationOut),
    body=ObservationUpdateBody,
    errors={404: "Observation not found", 409: "An observation is already logged for that date"},
)
async def update_observation(request: Request, body: ObservationUpdateBody) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    database = request.app.state.database
    try:
        return await database.write(
            change_her_day,
            observations,
            "Observation",
            path_id(request),
            request.user.id,
            changes,
            her_today(request),
            observation_conflict,
            check_signs,
        )
    except UNIQUE_VIOLATIONS:  # another request moved an observation onto that date at once
        raise observation_conflict(changes["date"]) from None


@endpoint("Delete an observation", ok=(204, None), errors={404: "Observation not found"})
async def delete_observation(request: Request) -> Response:
    return await delete_owned(request, observations, "Observation")
