"""Chores that run once for every instance together (the retention sweep), not once each."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from planher.clock import utc_now
from planher.storage.database import Database
from planher.storage.tables import chore_runs

# Plain SQL with bound parameters: the upsert is spelled the same on SQLite and PostgreSQL.
# Only the process whose statement moves the time on gets a row back.
CLAIM_CHORE = (
    "INSERT INTO chore_runs (name, last_run_at) VALUES (:name, :now) "
    "ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at "
    "WHERE chore_runs.last_run_at <= :due_before RETURNING name"
)


async def claim_chore(database: Database, name: str, every_s: float) -> bool:
    """Whether this process is the one to run chore `name` now: true for one caller once
    per `every_s`, however many instances ask."""
    now = utc_now()
    claimed = await database.fetch_one(
        sa.text(CLAIM_CHORE).bindparams(
            name=name, now=now, due_before=now - dt.timedelta(seconds=every_s)
        )
    )
    return claimed is not None


async def release_chore(database: Database, name: str) -> None:
    """Give back a claim whose chore failed, so the next to ask runs it."""
    await database.execute(chore_runs.delete().where(chore_runs.c.name == name))
