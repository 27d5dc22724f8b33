"""Queries that more than one endpoint group shares."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from planher.clock import today_in, utc_now
from planher.errors import APIError
from planher.schemas.requests import ListQuery
from planher.storage.database import Database, all_rows, first_row
from planher.storage.tables import (
    daily_moods,
    logins,
    observations,
    period_records,
    predictions,
    user_models,
    user_profiles,
    users,
)


async def email_taken(database: Database, email: str) -> bool:
    found = await database.fetch_val(sa.select(users.c.id).where(users.c.email == email))
    return found is not None


async def signed_in_from(
    database: Database, user_id: int, ip: str, live_since: dt.datetime
) -> bool:
    """Whether she has a live login from this address: not revoked (logged out, stolen)
    and refreshed since `live_since` (its refresh token has not expired)."""
    found = await database.fetch_val(
        sa.select(logins.c.id)
        .where(
            logins.c.user_id == user_id,
            logins.c.ip == ip,
            logins.c.revoked_at.is_(None),
            logins.c.refreshed_at >= live_since,
        )
        .limit(1)
    )
    return found is not None


def revoking_logins(condition: Any, reason: str) -> sa.Update:
    """The statement that revokes the live logins `condition` selects."""
    return (
        logins.update()
        .where(condition, logins.c.revoked_at.is_(None))
        .values(revoked_at=utc_now(), revoked_reason=reason)
    )


async def revoke_logins(database: Database, condition: Any, reason: str) -> None:
    await database.execute(revoking_logins(condition, reason))


PROFILE_OF = user_profiles.select().where(user_profiles.c.user_id == sa.bindparam("user_id"))
SIGN_FIELDS = ("date", "lh_test", "bbt_celsius", "cervical_mucus")
# Her periods and her observations in one statement: what places her days in their cycles.
PERIODS_AND_SIGNS_OF = sa.union_all(
    sa.select(
        sa.literal_column("'period'").label("kind"),
        period_records.c.start_date.label("day"),
        period_records.c.end_date.label("until"),
        period_records.c.excluded,
        *(sa.cast(sa.null(), observations.c[name].type).label(name) for name in SIGN_FIELDS[1:]),
    ).where(period_records.c.user_id == sa.bindparam("user_id")),
    sa.select(
        sa.literal_column("'sign'"),
        observations.c.date,
        sa.cast(sa.null(), sa.Date),
        sa.cast(sa.null(), sa.Boolean),
        *(observations.c[name] for name in SIGN_FIELDS[1:]),
    ).where(observations.c.user_id == sa.bindparam("user_id")),
)


async def fetch_profile(database: Database, user_id: int) -> dict[str, Any] | None:
    return await database.fetch_one(PROFILE_OF, {"user_id": user_id})


def profile_of(connection: sa.Connection, user_id: int) -> dict[str, Any] | None:
    return first_row(connection.execute(PROFILE_OF, {"user_id": user_id}))


def periods_and_signs_of(
    connection: sa.Connection, user_id: int
) -> tuple[list[tuple[dt.date, dt.date | None, bool]], list[dict[str, Any]]]:
    """Her periods as (start, end, excluded) and her observations' signs, in no order."""
    periods, signs = [], []
    rows = connection.execute(PERIODS_AND_SIGNS_OF, {"user_id": user_id})
    for kind, day, until, excluded, *sign in rows:
        if kind == "period":
            periods.append((day, until, excluded))
        else:
            signs.append(dict(zip(SIGN_FIELDS, (day, *sign), strict=True)))
    return periods, signs


async def delete_expired_history(database: Database) -> int:
    """Delete, for each woman who set retention_days, her periods, moods and served
    predictions older than that (by her own calendar). Returns how many rows went."""
    deleted = 0
    for user in await database.fetch_all(
        sa.select(users.c.id, users.c.time_zone, users.c.retention_days).where(
            users.c.retention_days.is_not(None)
        )
    ):
        keep_from = today_in(user["time_zone"]) - dt.timedelta(days=user["retention_days"])
        deleted += await database.write(delete_history_before, user["id"], keep_from)
    return deleted


def delete_history_before(connection: sa.Connection, user_id: int, keep_from: dt.date) -> int:
    deleted = 0
    for table, older in (
        (
            period_records,
            sa.func.coalesce(period_records.c.end_date, period_records.c.start_date) < keep_from,
        ),
        (daily_moods, daily_moods.c.date < keep_from),
        (observations, observations.c.date < keep_from),
        (predictions, predictions.c.date < keep_from),
    ):
        result = connection.execute(table.delete().where(table.c.user_id == user_id, older))
        deleted += result.rowcount
    return deleted


def lock_her_writes(connection: sa.Connection, user_id: int) -> None:
    """Within a unit of work: her checks-then-writes (overlaps, one profile) cannot
    interleave with another request of hers. SQLite's one writer already serializes them;
    PostgreSQL locks her users row."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())


def owned_row(
    connection: sa.Connection, table: sa.Table, row_id: int, user_id: int, what: str
) -> dict[str, Any]:
    """Her row with this id. Another user's row is not found, exactly like a missing one."""
    row = first_row(
        connection.execute(table.select().where(table.c.id == row_id, table.c.user_id == user_id))
    )
    if row is None:
        raise APIError(404, "not_found", f"{what} not found")
    return row


def insert_new(dialect: str, table: sa.Table, values: dict[str, Any]) -> sa.Insert:
    """Insert a row returning it, or nothing if one of the table's unique keys already has
    it: the check and the write in one statement (INSERT … ON CONFLICT DO NOTHING)."""
    insert = INSERTS[dialect](table).values(values).on_conflict_do_nothing()
    return insert.returning(*table.c)


INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclasses.dataclass(eq=False)
class Listing:
    """What a list endpoint pages through: rows of `table`, newest first by `date_column`,
    selecting `columns` from `source` (a join) when given; `owned` lists are one user's."""

    table: sa.Table
    date_column: sa.Column
    owned: bool = True
    columns: Sequence[Any] | None = None
    source: Any = None

    @functools.cache  # noqa: B019 (a few module-level listings, kept for the process)
    def statements(self, from_given: bool, to_given: bool) -> tuple[sa.Select, sa.Select]:
        """The count and the page, built once per filter shape, values bound per call."""
        condition = sa.true()
        if self.owned:
            condition &= self.table.c.user_id == sa.bindparam("owner_id")
        if from_given:
            condition &= self.date_column >= sa.bindparam("first_day")
        if to_given:
            condition &= self.date_column <= sa.bindparam("last_day")
        count = sa.select(sa.func.count()).select_from(self.table).where(condition)
        page = (
            sa.select(*(self.columns or self.table.c), sa.func.count().over().label(TOTAL))
            .select_from(self.table if self.source is None else self.source)
            .where(condition)
            .order_by(self.date_column.desc(), self.table.c.id.desc())
            .limit(sa.bindparam("limit"))
            .offset(sa.bindparam("offset"))
        )
        return count, page


TOTAL = "total_count"  # of every row the page is cut from, beside each row of the page


def page_of(
    connection: sa.Connection, listing: Listing, page: ListQuery, owner_id: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One `page` of `listing` (of `owner_id`'s rows if it is owned), with the total count
    for X-Total-Count, in one statement (the count only on its own for a page past the
    end). `from`/`to` are whole days, also on a timestamp column."""
    first_day, last_day = page.from_date, page.to_date
    if isinstance(listing.date_column.type, sa.DateTime):
        first_day = first_day and dt.datetime.combine(first_day, dt.time())
        last_day = last_day and dt.datetime.combine(last_day, dt.time.max)
    count, rows = listing.statements(first_day is not None, last_day is not None)
    values = {"owner_id": owner_id, "first_day": first_day, "last_day": last_day}
    found = all_rows(
        connection.execute(rows, {**values, "limit": page.limit, "offset": page.offset})
    )
    if not found:
        return [], 0 if page.offset == 0 else connection.execute(count, values).scalar()
    total = found[0][TOTAL]
    for row in found:
        del row[TOTAL]
    return found, total


async def list_page(
    database: Database, listing: Listing, page: ListQuery, owner_id: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    return await database.read(page_of, listing, page, owner_id)


ACCOUNT_COLUMNS = [column for column in users.c if column.name != "password_hash"]
HISTORY_SOURCE = predictions.outerjoin(
    daily_moods,
    sa.and_(
        daily_moods.c.user_id == predictions.c.user_id, daily_moods.c.date == predictions.c.date
    ),
)
HISTORY_COLUMNS = [*predictions.c, daily_moods.c.energy_level.label("actual_level")]


def logged_on(connection: sa.Connection, table: sa.Table, user_id: int, date: dt.date) -> bool:
    """Whether she has a row of `table` (moods, observations: one a day) on `date`."""
    found = connection.execute(
        sa.select(table.c.id).where(table.c.user_id == user_id, table.c.date == date)
    ).first()
    return found is not None


MODEL_METADATA_COLUMNS = [column for column in user_models.c if column.name != "model_blob"]


def owner_condition(user_id: int | None) -> Any:
    """Her models, or the population model's (no owner)."""
    return user_models.c.user_id.is_(None) if user_id is None else user_models.c.user_id == user_id


@functools.cache
def _newest_model_statement(personal: bool, shipped_only: bool) -> sa.Select:
    """Built once per shape: the home screen asks for it twice a request."""
    condition = owner_condition(sa.bindparam("user_id") if personal else None)
    if shipped_only:
        condition &= user_models.c.shipped.is_(True)
    return (
        sa.select(*MODEL_METADATA_COLUMNS)
        .where(condition)
        .order_by(user_models.c.version.desc())
        .limit(1)
    )


async def newest_model_row(database: Database, user_id: int | None, shipped_only: bool) -> Any:
    statement = _newest_model_statement(user_id is not None, shipped_only)
    return await database.fetch_one(statement, {"user_id": user_id})


async def changed_moods_since(
    database: Database, user_id: int | None, since: dt.datetime | None
) -> int:
    condition = sa.true() if user_id is None else daily_moods.c.user_id == user_id
    if since is not None:
        condition &= daily_moods.c.updated_at >= since
    return await database.fetch_val(
        sa.select(sa.func.count()).select_from(daily_moods).where(condition)
    )
