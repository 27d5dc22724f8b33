"""When the database cannot serve: which errors mean that, and how they are logged."""

from __future__ import annotations

import logging
import math
import time

import sqlalchemy as sa

from planher.config import (
    FAILURE_LOG_INTERVAL_S,
    POSTGRES_UNAVAILABLE_STATES,
    SQLITE_UNAVAILABLE_ERRORS,
)

logger = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database did not answer within its timeout, or cannot serve now (down, frozen,
    locked by another program, read-only, out of disk). Clients get 503 with Retry-After."""


def unavailable_because(error: BaseException, timeout_s: float) -> DatabaseUnavailable:
    """The 503's exception for `error`, which stays attached as its cause."""
    if isinstance(error, DatabaseUnavailable):
        return error
    if isinstance(error, TimeoutError):
        unavailable = DatabaseUnavailable(f"The database did not answer within {timeout_s:g} s")
    else:
        unavailable = DatabaseUnavailable("The database is unavailable")
    unavailable.__cause__ = error
    return unavailable


def masked_url(url: str) -> str:
    """The database URL as it may be logged: any password replaced by ***."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unreadable DATABASE_URL)"


def driver_url(url: str) -> sa.URL:
    """`sqlite:///file` (the stdlib driver) or `postgresql://…` (`postgres://` too: asyncpg)."""
    parsed = sa.make_url(url)
    backend = parsed.drivername.partition("+")[0]
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise sa.exc.ArgumentError("PlanHer keeps its data in a file: sqlite:///planher.db")
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise sa.exc.ArgumentError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot serve now, rather than that a statement
    broke a rule (a duplicate: the caller's 409) or is wrong (a bug: 500)."""
    if isinstance(error, TimeoutError | OSError | sa.exc.TimeoutError):
        return True
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, sa.exc.InterfaceError):
        return True
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    if sqlite_error is not None:
        return sqlite_error.startswith(SQLITE_UNAVAILABLE_ERRORS)
    return (getattr(error.orig, "sqlstate", None) or "").startswith(POSTGRES_UNAVAILABLE_STATES)


def unavailable_cause(error: DatabaseUnavailable) -> str:
    """The 503's cause in the metrics: a few fixed words, never a message."""
    if isinstance(error.__cause__, sa.exc.TimeoutError):  # no pooled connection came free
        return "pool_exhausted"
    if isinstance(error.__cause__, TimeoutError):
        return "database_timeout"
    return "database_unavailable"


def failure_kind(error: BaseException) -> str:
    """A failure's class and the first line of its message, without statement or values."""
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    message = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


class FailureLog:
    """One log line per kind of database failure per FAILURE_LOG_INTERVAL_S: an outage
    must not fill the log with a traceback per request."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._last_logged: dict[str, float] = {}

    def record(self, error: DatabaseUnavailable) -> None:
        kind, now = failure_kind(error.__cause__ or error), time.monotonic()
        if now - self._last_logged.get(kind, -math.inf) >= FAILURE_LOG_INTERVAL_S:
            self._last_logged[kind] = now
            logger.error("database %s unavailable: %s", self.database, kind)
