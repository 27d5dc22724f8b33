"""/users/me: her account, its deletion and her export."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import everyones_cycles, mood_out, period_out
from planher.clock import utc_now
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.ovulation import FertilitySign
from planher.errors import APIError
from planher.schemas.requests import UserUpdateBody
from planher.schemas.responses import ExportOut, UserOut
from planher.security.audit import audit, audit_event
from planher.security.passwords import hash_password, verify_password
from planher.storage.database import UNIQUE_VIOLATIONS, first_row
from planher.storage.queries import (
    HISTORY_COLUMNS,
    HISTORY_SOURCE,
    MODEL_METADATA_COLUMNS,
    SIGN_FIELDS,
    email_taken,
    fetch_profile,
    revoking_logins,
)
from planher.storage.tables import (
    audit_events,
    daily_moods,
    logins,
    observations,
    period_records,
    predictions,
    user_models,
    users,
)
from planher.web.endpoint import endpoint
from planher.web.request_errors import RequestValidationError


@endpoint(
    "Change name, email or password (email and password need current_password)",
    ok=(200, UserOut),
    body=UserUpdateBody,
    errors={403: "Current password is incorrect", 409: "Email taken"},
)
async def update_me(request: Request, body: UserUpdateBody) -> Any:
    await check_current_password(request, body)
    changes = await account_changes(request, body)
    if not changes:
        return request.user.account
    events = [
        audit_event(request, f"{field}_change", ok=True)
        for field in ("email", "password")
        if CHANGED_COLUMN[field] in changes
    ]
    try:
        return await request.app.state.database.write(
            save_account_changes, request.user.id, request.user.login_id, changes, events
        )
    except UNIQUE_VIOLATIONS:
        raise APIError(409, "email_taken", "An account with this email already exists") from None


CHANGED_COLUMN = {"email": "email", "password": "password_hash"}


def save_account_changes(
    connection: sa.Connection,
    user_id: int,
    login_id: int,
    changes: dict[str, Any],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """A unit of work: her account changed, her other logins signed out if the password
    changed, and the credential changes audited; all of it, or none."""
    now = utc_now()
    row = first_row(
        connection.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(**changes, updated_at=now)
            .returning(*users.c)
        )
    )
    if "password_hash" in changes:
        others = sa.and_(logins.c.user_id == user_id, logins.c.id != login_id)
        connection.execute(revoking_logins(others, "password_change"))
    if events:
        connection.execute(audit_events.insert(), events)
    return row


async def check_current_password(request: Request, body: UserUpdateBody) -> None:
    """A new email or password needs her current password: 422 without it, 403 if wrong."""
    credentials = sorted(body.model_fields_set & {"email", "password"})
    if not credentials:
        return
    if body.current_password is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("current_password",),
                    "msg": "current_password is required to change email or password",
                    "type": "missing",
                }
            ],
            "body",
        )
    password_hash = await request.app.state.database.fetch_val(
        sa.select(users.c.password_hash).where(users.c.id == request.user.id)
    )
    if not await verify_password(body.current_password, password_hash):
        for field in credentials:
            await audit(request, f"{field}_change", ok=False)
        raise APIError(403, "wrong_password", "Current password is incorrect")


async def account_changes(request: Request, body: UserUpdateBody) -> dict[str, Any]:
    """The columns to set: what she sent, an email only if it is new and free, a password
    as its hash."""
    changes: dict[str, Any] = {
        field: getattr(body, field)
        for field in ("name", "time_zone", "retention_days")
        if field in body.model_fields_set
    }
    if body.email is not None and body.email != request.user.account["email"]:
        if await email_taken(request.app.state.database, body.email):
            raise APIError(409, "email_taken", "An account with this email already exists")
        changes["email"] = body.email
    if body.password is not None:
        changes["password_hash"] = await hash_password(
            body.password, request.app.state.settings.bcrypt_rounds
        )
    return changes


@endpoint("Delete the account and everything it owns", ok=(204, None))
async def delete_me(request: Request) -> Response:
    event = audit_event(request, "account_deletion", ok=True)
    await request.app.state.database.write(delete_account, request.user.id, event)
    return Response(status_code=204)


def delete_account(connection: sa.Connection, user_id: int, event: dict[str, Any]) -> None:
    """A unit of work: her account and everything it owns (profile, periods, moods, models,
    predictions and logins go with it: ON DELETE CASCADE), and the deletion audited."""
    connection.execute(users.delete().where(users.c.id == user_id))
    connection.execute(audit_events.insert().values(event))


@endpoint("Everything the user owns", ok=(200, ExportOut))
async def export_me(request: Request) -> Any:
    """Everything she owns, and only that: models as metadata, never their bytes."""
    database, user_id = request.app.state.database, request.user.id

    async def owned(table: sa.Table, *order: Any) -> list:
        return await database.fetch_large(
            table.select().where(table.c.user_id == user_id).order_by(*order)
        )

    profile = await fetch_profile(database, user_id)
    periods = await owned(period_records, period_records.c.start_date.desc())
    moods = await owned(daily_moods, daily_moods.c.date.desc())
    served = await database.fetch_large(
        sa.select(*HISTORY_COLUMNS)
        .select_from(HISTORY_SOURCE)
        .where(predictions.c.user_id == user_id)
        .order_by(predictions.c.date.desc(), predictions.c.id.desc())
    )
    models = await database.fetch_all(
        sa.select(*MODEL_METADATA_COLUMNS)
        .where(user_models.c.user_id == user_id)
        .order_by(user_models.c.version.desc())
    )
    signs = await owned(observations, observations.c.date.desc())
    calendar = CycleCalendar.build(
        [PeriodSpan(row["start_date"], row["end_date"], row["excluded"]) for row in periods],
        profile,
        [FertilitySign(**{name: row[name] for name in SIGN_FIELDS}) for row in signs],
        everyones_cycles(request),
    )
    await audit(request, "export", ok=True)
    return {
        "user": request.user.account,
        "profile": profile,
        "periods": [period_out(row, calendar) for row in periods],
        "moods": [mood_out(row, calendar) for row in moods],
        "observations": signs,
        "predictions": served,
        "models": models,
    }
