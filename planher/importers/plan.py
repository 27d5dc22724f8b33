"""The import plan: what of an imported history is new, and what hers already says."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

from planher.config import PERIOD_MAX_DAYS
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.rules import profile_problems
from planher.importers.history import (
    ImportedHistory,
    ImportedMood,
    ImportedObservation,
    ImportedPeriod,
    SkipLog,
)


def dated_kept(
    what: str,
    items: Iterable[Any],
    stored_dates: set[dt.date],
    today: dt.date,
    keep_from: dt.date | None,
    skipped: SkipLog,
) -> list[Any]:
    """Of a file's one-a-day items (moods, observations), those to store: none in the
    future, none her retention would delete, none on a date she has logged, one a date."""
    kept, dates = [], set(stored_dates)
    for item in sorted(items, key=lambda item: item.date):
        if item.date > today:
            skipped.add(what, "in the future", item.date)
        elif keep_from is not None and item.date < keep_from:
            skipped.add(what, "older than her retention_days keep", item.date)
        elif item.date in stored_dates:
            skipped.add(what, f"she already logged that day's {what}", item.date)
        elif item.date in dates:
            skipped.add(what, f"a second {what} for that day in the file", item.date)
        else:
            kept.append(item)
            dates.add(item.date)
    return kept


@dataclasses.dataclass
class ImportPlan:
    """What an import stores, given what she already has."""

    periods: list[ImportedPeriod]
    moods: list[ImportedMood]
    observations: list[ImportedObservation]
    profile: dict[str, Any] | None  # to create, when she has none and the file has one whole
    skipped: SkipLog


def plan_import(
    history: ImportedHistory,
    stored: CycleCalendar,
    stored_mood_dates: set[dt.date],
    stored_observation_dates: set[dt.date],
    has_profile: bool,
    today: dt.date,
    keep_from: dt.date | None,
) -> ImportPlan:
    """Her file against her history: what she already has wins, the future and what her
    retention would delete are left out, and every period kept obeys the periods' rules."""
    skipped = history.skipped
    periods = planned_periods(history.periods, stored, today, keep_from, skipped)
    moods = dated_kept("mood", history.moods, stored_mood_dates, today, keep_from, skipped)
    kept_observations = dated_kept(
        "observation", history.observations, stored_observation_dates, today, keep_from, skipped
    )
    profile = planned_profile(history.profile, has_profile, skipped)
    return ImportPlan(periods, moods, kept_observations, profile, skipped)


def planned_periods(
    periods: list[ImportedPeriod],
    stored: CycleCalendar,
    today: dt.date,
    keep_from: dt.date | None,
    skipped: SkipLog,
) -> list[ImportedPeriod]:
    """The file's periods that keep the rules beside hers and the ones kept before them."""
    kept: list[ImportedPeriod] = []
    spans = list(stored.periods)
    for period in sorted(periods, key=lambda period: period.start):
        end = period.end
        if end is not None and period.start <= today < end:
            end = None  # under way: she ends it when it ends
        candidate = PeriodSpan(period.start, end)
        calendar = dataclasses.replace(stored, periods=tuple(spans))
        reason = period_refused(candidate, calendar, stored, today, keep_from)
        if reason is not None:
            skipped.add("period", reason, period.start)
        else:
            kept.append(dataclasses.replace(period, end=end))
            spans.append(candidate)
    return kept


def period_refused(
    candidate: PeriodSpan,
    calendar: CycleCalendar,
    stored: CycleCalendar,
    today: dt.date,
    keep_from: dt.date | None,
) -> str | None:
    """Why a period cannot be imported beside those of `calendar`, or None."""
    start, end = candidate.start, candidate.end
    if start > today:
        return "starts in the future"
    if end is not None and (end - start).days + 1 > PERIOD_MAX_DAYS:
        return f"lasts more than {PERIOD_MAX_DAYS} days"
    if end is not None and end < start:
        return "ends before it starts"
    if keep_from is not None and calendar.effective_end(candidate) < keep_from:
        return "older than her retention_days keep"
    if (overlap := calendar.overlapping(candidate)) is not None:
        return (
            "overlaps a period she already logged"
            if overlap in stored.periods
            else "overlaps another period in the file"
        )
    return None


def planned_profile(
    found: dict[str, Any] | None, has_profile: bool, skipped: SkipLog
) -> dict[str, Any] | None:
    """The file's profile, to create when she has none and it is whole and valid."""
    if not found:
        return None
    if has_profile:
        skipped.add("profile", "she already has a profile, and hers wins")
    elif not {"height_cm", "weight_kg"} <= found.keys():
        skipped.add(
            "profile",
            "a profile needs height_cm and weight_kg, which the file does not carry: "
            "create it with the settings in `profile.found`",
        )
    elif problems := profile_problems(found):
        skipped.add("profile", problems[0][1])
    else:
        return found
    return None


def import_report(history: ImportedHistory, plan: ImportPlan, dry_run: bool) -> dict[str, Any]:
    def counted(dates: list[dt.date]) -> dict[str, Any]:
        return {
            "count": len(dates),
            "first_date": min(dates, default=None),
            "last_date": max(dates, default=None),
        }

    return {
        "format": history.format,
        "dry_run": dry_run,
        "periods": counted([period.start for period in plan.periods]),
        "excluded_periods": [period.start for period in plan.periods if period.excluded],
        "moods": counted([mood.date for mood in plan.moods]),
        "observations": counted([sign.date for sign in plan.observations]),
        "profile": (
            {"found": history.profile, "applied": plan.profile is not None}
            if history.profile
            else None
        ),
        "skipped": plan.skipped.report(),
        "unmapped": dict(sorted(history.unmapped.items())),
    }
