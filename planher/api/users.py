"""/users/me: her account, its deletion and her export."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from planher.api.common import mood_out, period_out
from planher.clock import utc_now
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.ovulation import FertilitySign
from planher.errors import APIError
from planher.schemas.requests import UserUpdateBody
from planher.schemas.responses import ExportOut, UserOut
from planher.security.audit import audit
from planher.security.passwords import hash_password, verify_password
from planher.storage.database import UNIQUE_VIOLATIONS
from planher.storage.queries import (
    HISTORY_COLUMNS,
    HISTORY_SOURCE,
    MODEL_METADATA_COLUMNS,
    SIGN_FIELDS,
    email_taken,
    fetch_profile,
    revoke_logins,
)
from planher.storage.tables import (
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
    try:
        row = await request.app.state.database.fetch_one(
            users.update()
            .where(users.c.id == request.user.id)
            .values(**changes, updated_at=utc_now())
            .returning(*users.c)
        )
    except UNIQUE_VIOLATIONS:
        raise APIError(409, "email_taken", "An account with this email already exists") from None
    await after_credentials_change(request, changes)
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


async def after_credentials_change(request: Request, changes: dict[str, Any]) -> None:
    """A new password signs out her other logins; both changes are audited."""
    if "password_hash" in changes:
        await revoke_logins(
            request.app.state.database,
            sa.and_(logins.c.user_id == request.user.id, logins.c.id != request.user.login_id),
            "password_change",
        )
        await audit(request, "password_change", ok=True)
    if "email" in changes:
        await audit(request, "email_change", ok=True)


@endpoint("Delete the account and everything it owns", ok=(204, None))
async def delete_me(request: Request) -> Response:
    # Profile, periods, moods, models, predictions and logins go with it (ON DELETE CASCADE).
    await request.app.state.database.execute(users.delete().where(users.c.id == request.user.id))
    await audit(request, "account_deletion", ok=True)
    return Response(status_code=204)


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
        [PeriodSpan(row["start_date"], row["end_date"]) for row in periods],
        profile,
        [FertilitySign(**{name: row[name] for name in SIGN_FIELDS}) for row in signs],
        request.app.state.cycle_prior,
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
