"""/users/me/import: her history from another tracker's file."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import tempfile
import typing
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from planher.api.common import her_calendar, her_today
from planher.clock import utc_now
from planher.config import IMPORT_SPOOL_BYTES
from planher.errors import APIError
from planher.importers.detection import read_import
from planher.importers.history import FileTooLarge, ImportedHistory, MalformedFile, UnknownFormat
from planher.importers.plan import ImportPlan, import_report, plan_import
from planher.schemas.responses import ImportFormat, ImportQuery, ImportReportOut
from planher.security.audit import audit
from planher.storage.queries import user_write_transaction
from planher.storage.tables import daily_moods, observations, period_records, user_profiles
from planher.web.endpoint import endpoint

IMPORT_MEDIA_TYPES = (
    "application/octet-stream, text/csv, application/json, application/gzip, application/xml, "
    "application/zip, or multipart/form-data with one file field"
)


@contextlib.asynccontextmanager
async def uploaded_file(request: Request):
    """The request's file, spooled to a temporary file past IMPORT_SPOOL_BYTES: the body
    itself, or the one file of a multipart form."""
    if request.headers.get("Content-Type", "").startswith("multipart/form-data"):
        try:
            async with request.form(max_files=1, max_fields=10) as form:
                files = [value for value in form.values() if isinstance(value, UploadFile)]
                if len(files) != 1:
                    raise APIError(
                        422, "malformed_file", "Send one file (a multipart form with one file)"
                    )
                yield files[0].file
                return
        except HTTPException as error:
            if isinstance(error, APIError):
                raise
            raise APIError(400, "malformed_body", "The multipart form is malformed") from None
    with tempfile.SpooledTemporaryFile(IMPORT_SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        yield spool


async def read_her_file(request: Request, format_name: str | None) -> ImportedHistory:
    """Her file as history, parsed off the event loop; 413 or 422 for a file we cannot take."""
    max_unpacked = request.app.state.settings.import_max_unpacked_bytes
    async with uploaded_file(request) as file:
        try:
            return await run_in_threadpool(read_import, file, format_name, max_unpacked)
        except UnknownFormat:
            raise APIError(
                422,
                "unknown_format",
                "The file is in none of the formats PlanHer reads (tried: "
                + ", ".join(typing.get_args(ImportFormat))
                + "); name one with ?format= if it is one of them",
            ) from None
        except MalformedFile as error:
            raise APIError(422, "malformed_file", f"The file cannot be imported: {error}") from None
        except FileTooLarge:
            raise APIError(
                413,
                "file_too_large",
                f"The file unpacks to more than {max_unpacked} bytes, or suspiciously much "
                "for its size (a zip bomb?)",
            ) from None


async def import_plan(
    request: Request, history: ImportedHistory, today: dt.date, keep_from: dt.date | None
) -> ImportPlan:
    database, user_id = request.app.state.database, request.user.id
    calendar = await her_calendar(request)  # her periods and profile, read once

    async def dates_of(table: sa.Table) -> set[dt.date]:
        rows = await database.fetch_large(sa.select(table.c.date).where(table.c.user_id == user_id))
        return {row["date"] for row in rows}

    return plan_import(
        history,
        calendar,
        await dates_of(daily_moods),
        await dates_of(observations),
        calendar.profile is not None,
        today,
        keep_from,
    )


@endpoint(
    "Import her history from another tracker's file or a PlanHer export",
    ok=(200, ImportReportOut),
    query=ImportQuery,
    upload=IMPORT_MEDIA_TYPES,
    errors={
        413: "The file is over IMPORT_MAX_BYTES, or unpacks to too much",
        422: "Not a format PlanHer reads, or malformed (`detail` says where)",
    },
)
async def import_me(request: Request, query: ImportQuery) -> Any:
    """What she already has wins; all or nothing; her model retrains once, afterwards."""
    history = await read_her_file(request, query.format)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    today, retention_days = her_today(request), request.user.account["retention_days"]
    keep_from = None if retention_days is None else today - dt.timedelta(days=retention_days)
    if query.dry_run:
        plan = await import_plan(request, history, today, keep_from)
        return import_report(history, plan, dry_run=True)
    stamps = {"user_id": user_id, "created_at": now, "updated_at": now}
    async with user_write_transaction(database, user_id):
        plan = await import_plan(request, history, today, keep_from)
        if plan.profile is not None:
            await database.execute(user_profiles.insert().values(**stamps, **plan.profile))
        if plan.periods:
            await database.execute(
                period_records.insert(),
                [
                    {**stamps, "start_date": p.start, "end_date": p.end, "notes": p.notes}
                    for p in plan.periods
                ],
            )
        if plan.moods:
            await database.execute(
                daily_moods.insert(),
                [
                    {
                        **stamps,
                        "date": mood.date,
                        "energy_level": mood.energy_level,
                        "notes": mood.notes,
                        "day_of_cycle": mood.day_of_cycle,
                    }
                    for mood in plan.moods
                ],
            )
        if plan.observations:
            await database.execute(
                observations.insert(),
                [{**stamps, **dataclasses.asdict(sign)} for sign in plan.observations],
            )
    await audit(request, "import", ok=True, target=history.format)
    if plan.periods or plan.moods:
        request.app.state.trainer.schedule(user_id, force=True)
    return import_report(history, plan, dry_run=False)
