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

from planher.api.common import calendar_of, everyones_cycles, her_today
from planher.clock import utc_now
from planher.config import IMPORT_SPOOL_BYTES
from planher.cycles.population import CyclePopulation
from planher.errors import APIError
from planher.importers.detection import read_import
from planher.importers.history import FileTooLarge, ImportedHistory, MalformedFile, UnknownFormat
from planher.importers.plan import ImportPlan, import_report, plan_import
from planher.metrics import IMPORTS
from planher.schemas.responses import ImportFormat, ImportQuery, ImportReportOut
from planher.security.audit import audit
from planher.storage.queries import lock_her_writes
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
            IMPORTS.labels(format=format_name or "unknown", outcome="unknown_format").inc()
            raise APIError(
                422,
                "unknown_format",
                "The file is in none of the formats PlanHer reads (tried: "
                + ", ".join(typing.get_args(ImportFormat))
                + "); name one with ?format= if it is one of them",
            ) from None
        except MalformedFile as error:
            IMPORTS.labels(format=format_name or "detected", outcome="malformed").inc()
            raise APIError(422, "malformed_file", f"The file cannot be imported: {error}") from None
        except FileTooLarge:
            IMPORTS.labels(format=format_name or "detected", outcome="too_large").inc()
            raise APIError(
                413,
                "file_too_large",
                f"The file unpacks to more than {max_unpacked} bytes, or suspiciously much "
                "for its size (a zip bomb?)",
            ) from None


def import_plan(
    connection: sa.Connection,
    user_id: int,
    history: ImportedHistory,
    today: dt.date,
    keep_from: dt.date | None,
    population: CyclePopulation,
) -> ImportPlan:
    """What of `history` she does not have yet, as her stored days stand now."""
    calendar = calendar_of(connection, user_id, population)

    def dates_of(table: sa.Table) -> set[dt.date]:
        return set(
            connection.execute(sa.select(table.c.date).where(table.c.user_id == user_id)).scalars()
        )

    return plan_import(
        history,
        calendar,
        dates_of(daily_moods),
        dates_of(observations),
        calendar.profile is not None,
        today,
        keep_from,
    )


def import_history(connection: sa.Connection, user_id: int, *planning: Any) -> ImportPlan:
    """Plan the import and store it, all or nothing."""
    lock_her_writes(connection, user_id)
    plan = import_plan(connection, user_id, *planning)
    now = utc_now()
    stamps = {"user_id": user_id, "created_at": now, "updated_at": now}
    if plan.profile is not None:
        connection.execute(user_profiles.insert().values(**stamps, **plan.profile))
    new_rows = {
        period_records: [
            {"start_date": p.start, "end_date": p.end, "notes": p.notes, "excluded": p.excluded}
            for p in plan.periods
        ],
        daily_moods: [dataclasses.asdict(mood) for mood in plan.moods],
        observations: [dataclasses.asdict(sign) for sign in plan.observations],
    }
    for table, rows in new_rows.items():
        if rows:
            connection.execute(table.insert(), [{**stamps, **row} for row in rows])
    return plan


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
    database, user_id = request.app.state.database, request.user.id
    today, retention_days = her_today(request), request.user.account["retention_days"]
    keep_from = None if retention_days is None else today - dt.timedelta(days=retention_days)
    planning = (user_id, history, today, keep_from, everyones_cycles(request))
    if query.dry_run:
        plan = await database.read(import_plan, *planning)
        IMPORTS.labels(format=history.format, outcome="dry_run").inc()
        return import_report(history, plan, dry_run=True)
    plan = await database.write(import_history, *planning)
    await audit(request, "import", ok=True, target=history.format)
    IMPORTS.labels(format=history.format, outcome="imported").inc()
    if plan.periods or plan.moods:
        request.app.state.trainer.schedule(user_id, force=True)
    return import_report(history, plan, dry_run=False)
