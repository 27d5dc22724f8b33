"""/profiles/me: her cycle profile."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from planher.clock import utc_now
from planher.cycles.rules import profile_problems
from planher.errors import APIError
from planher.schemas.requests import ProfileBody, ProfileUpdateBody
from planher.schemas.responses import ProfileOut
from planher.storage.queries import fetch_profile, user_write_transaction
from planher.storage.tables import user_profiles
from planher.web.endpoint import Reply, endpoint, rule_errors

NO_PROFILE = "No profile yet: create one first"


@endpoint("Her profile", ok=(200, ProfileOut), errors={404: "No profile yet"})
async def get_profile(request: Request) -> Any:
    profile = await fetch_profile(request.app.state.database, request.user.id)
    if profile is None:
        raise APIError(404, "not_found", NO_PROFILE)
    return profile


@endpoint(
    "Create her profile (201), or replace it whole (200)",
    ok=(201, ProfileOut),
    body=ProfileBody,
    errors={200: "Replaced"},
)
async def create_profile(request: Request, body: ProfileBody) -> Any:
    fields = body.model_dump()
    if problems := profile_problems(fields):
        raise rule_errors(problems)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    async with user_write_transaction(database, user_id):
        if await fetch_profile(database, user_id) is None:
            row = await database.fetch_one(
                user_profiles.insert()
                .values(user_id=user_id, **fields, created_at=now, updated_at=now)
                .returning(*user_profiles.c)
            )
            return row
        row = await database.fetch_one(
            user_profiles.update()
            .where(user_profiles.c.user_id == user_id)
            .values(**fields, updated_at=now)
            .returning(*user_profiles.c)
        )
    return Reply(row, 200)  # replaced


@endpoint(
    "Change some profile fields",
    ok=(200, ProfileOut),
    body=ProfileUpdateBody,
    errors={404: "No profile yet"},
)
async def update_profile(request: Request, body: ProfileUpdateBody) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_profile(database, user_id)
        if current is None:
            raise APIError(404, "not_found", NO_PROFILE)
        if problems := profile_problems({**current, **changes}):
            raise rule_errors(problems)
        row = await database.fetch_one(
            user_profiles.update()
            .where(user_profiles.c.user_id == user_id)
            .values(**changes, updated_at=utc_now())
            .returning(*user_profiles.c)
        )
    return row
