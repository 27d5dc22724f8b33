"""The time: now in UTC, her today in her time zone, and how timestamps are written."""

from __future__ import annotations

import datetime as dt
import zoneinfo


def utc_now() -> dt.datetime:
    """The current UTC time as stored: naive (responses show it to the second)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def format_timestamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def today_in(time_zone: str) -> dt.date:
    """Her calendar date now, in her IANA time zone."""
    return dt.datetime.now(zoneinfo.ZoneInfo(time_zone)).date()


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
