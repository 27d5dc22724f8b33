"""Rate limits: sign-in attempts counted in the database, requests counted in memory."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request

from planher.clock import utc_now
from planher.config import RATE_LIMIT_PURGE_INTERVAL_S, RateLimit
from planher.errors import APIError
from planher.storage.tables import rate_limits

# Plain SQL with bound parameters: the upsert is spelled the same on SQLite and PostgreSQL.
# Every SET expression sees the row as it was, so both CASEs test the old window.
COUNT_RATE_LIMIT_HIT = (
    "INSERT INTO rate_limits (bucket, window_start, hits) VALUES (:bucket, :now, 1) "
    "ON CONFLICT (bucket) DO UPDATE SET "
    "hits = CASE WHEN rate_limits.window_start <= :expired THEN 1 ELSE rate_limits.hits + 1 END, "
    "window_start = CASE WHEN rate_limits.window_start <= :expired THEN :now "
    "ELSE rate_limits.window_start END "
    "RETURNING hits, window_start"
)


def rate_bucket(name: str, key: str) -> str:
    """The limit's name and a hash of what it counts, so no email sits in the table."""
    return f"{name}:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:48]}"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(retry_after_s: float, what: str) -> APIError:
    seconds = max(1, math.ceil(retry_after_s))
    return APIError(
        429,
        "rate_limited",
        f"Too many {what}; try again in {seconds} seconds",
        headers={"Retry-After": str(seconds)},
    )


async def count_against_limit(request: Request, name: str, key: str, what: str) -> None:
    """Count one hit in the shared (database) window of limit `name`; 429 past the limit."""
    rule = request.app.state.settings.rate_limits[name]
    now = utc_now()
    row = await request.app.state.database.fetch_one(
        sa.text(COUNT_RATE_LIMIT_HIT)
        .bindparams(
            bucket=rate_bucket(name, key),
            now=now,
            expired=now - dt.timedelta(seconds=rule.window_s),
        )
        .columns(hits=sa.Integer, window_start=sa.DateTime)
    )
    if row["hits"] > rule.limit:
        window_end = row["window_start"] + dt.timedelta(seconds=rule.window_s)
        raise rate_limited((window_end - now).total_seconds(), what)


async def refund_hit(request: Request, name: str, key: str) -> None:
    """Return a hit counted against limit `name` for `key` (a sign-in that succeeded)."""
    await request.app.state.database.execute(
        rate_limits.update()
        .where(rate_limits.c.bucket == rate_bucket(name, key), rate_limits.c.hits > 0)
        .values(hits=rate_limits.c.hits - 1)
    )


async def purge_expired_windows(app: Starlette) -> None:
    """Delete the windows of rate limits that have passed, at most once a
    RATE_LIMIT_PURGE_INTERVAL_S per process: they count nothing any more."""
    now = time.monotonic()
    if now - app.state.rate_limits_purged_at < RATE_LIMIT_PURGE_INTERVAL_S:
        return
    app.state.rate_limits_purged_at = now
    longest_window_s = max(rule.window_s for rule in app.state.settings.rate_limits.values())
    await app.state.database.execute(
        rate_limits.delete().where(
            rate_limits.c.window_start < utc_now() - dt.timedelta(seconds=longest_window_s)
        )
    )


class RequestCounter:
    """Per-user request counts in fixed windows, in this process only: each worker allows
    the limit on its own (cheap enough to run on every request, unlike a database row)."""

    def __init__(self, rule: RateLimit) -> None:
        self.rule = rule
        self._window_start = 0.0
        self._counts: dict[int, int] = {}

    def retry_after(self, user_id: int, now: float) -> float | None:
        """Count a request; the seconds to wait if it is over the limit, else None."""
        if now - self._window_start >= self.rule.window_s:
            self._window_start, self._counts = now, {}
        self._counts[user_id] = self._counts.get(user_id, 0) + 1
        if self._counts[user_id] > self.rule.limit:
            return self._window_start + self.rule.window_s - now
        return None
