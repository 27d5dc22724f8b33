"""/profiles/me: her cycle profile."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request

from planher.clock import utc_now
from planher.cycles.rules import profile_problems
from planher.errors import APIError
from planher.schemas.requests import ProfileBody, ProfileUpdateBody
from planher.schemas.responses import ProfileOut
from planher.storage.database import first_row
from planher.storage.queries import fetch_profile, insert_new, lock_her_writes, profile_of
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
    row, created = await request.app.state.database.write(save_profile, request.user.id, fields)
    return row if created else Reply(row, 200)  # replaced


def save_profile(connection: sa.Connection, user_id: int, fields: dict) -> tuple[dict, bool]:
    """Her profile as given, and whether it is new."""
    now = utc_now()
    new = {"user_id": user_id, **fields, "created_at": now, "updated_at": now}
    row = first_row(connection.execute(insert_new(connection.dialect.name, user_profiles, new)))
    if row is not None:
        return row, True
    replaced = connection.execute(
        user_profiles.update()
        .where(user_profiles.c.user_id == user_id)
        .values(**fields, updated_at=now)
        .returning(*user_profiles.c)
    )
    return first_row(replaced), False


def change_profile(connection: sa.Connection, user_id: int, changes: dict) -> dict[str, Any]:
    lock_her_writes(connection, user_id)
    current = profile_of(connection, user_id)
    if current is None:
        raise APIError(404, "not_found", NO_PROFILE)
    if problems := profile_problems({**current, **changes}):
        raise rule_errors(problems)
    changed = connection.execute(
        user_profiles.update()
        .where(user_profiles.c.user_id == user_id)
        .values(**changes, updated_at=utc_now())
        .returning(*user_profiles.c)
    )
    return first_row(changed)


@endpoint(
    "Change some profile fields",
    ok=(200, ProfileOut),
    body=ProfileUpdateBody,
    errors={404: "No profile yet"},
)
async def update_profile(request: Request, body: ProfileUpdateBody) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    return await request.app.state.database.write(change_profile, request.user.id, changes)
