"""What every importer produces: her history from another tracker, and what was skipped."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from planher.body_mass import round_half_up
from planher.config import (
    BBT_MAX_CELSIUS,
    BBT_MIN_CELSIUS,
    BLEEDING_GAP_DAYS,
    EARLIEST_DATE,
    IMPORT_MAX_UNMAPPED_NAMES,
    IMPORT_REPORT_DATES,
    IMPORT_UNMAPPED_NAME_CHARS,
    LATEST_DATE,
    NOTES_MAX_CHARS,
)
from planher.schemas.fields import NOTE_CONTROL_CHARACTERS

#
# Each format, its source and its mapping rules are in ../shared/formats/README.md. Every
# importer gives an ImportedHistory; plan_import then decides, against what she already has,
# what is stored and what is skipped, and why.


class UnknownFormat(Exception):
    """The file is in none of the formats PlanHer reads."""


class MalformedFile(Exception):
    """The file is in a known format but breaks it; the message says where."""


class FileTooLarge(Exception):
    """The file unpacks (gzip, zip) to more than the import's bound."""


@dataclasses.dataclass(frozen=True)
class ImportedPeriod:
    start: dt.date
    end: dt.date | None
    notes: str | None = None
    excluded: bool = False  # the cycle it starts is set aside (Clue's excluded cycles)


@dataclasses.dataclass(frozen=True)
class ImportedMood:
    date: dt.date
    energy_level: int
    notes: str | None = None
    day_of_cycle: int | None = None


@dataclasses.dataclass(frozen=True)
class ImportedObservation:
    date: dt.date
    lh_test: str | None = None
    bbt_celsius: float | None = None
    cervical_mucus: str | None = None
    notes: str | None = None


class SkipLog:
    """What an import leaves out, grouped by (what, reason), with the dates concerned."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], list[dt.date | None]] = {}

    def add(self, what: str, reason: str, date: dt.date | None = None) -> None:
        self.entries.setdefault((what, reason), []).append(date)

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "what": what,
                "reason": reason,
                "count": len(dates),
                "dates": sorted({date for date in dates if date is not None})[:IMPORT_REPORT_DATES],
            }
            for (what, reason), dates in self.entries.items()
        ]


@dataclasses.dataclass
class ImportedHistory:
    """What a file holds, in PlanHer's terms, before anything she has is looked at."""

    format: str
    periods: list[ImportedPeriod] = dataclasses.field(default_factory=list)
    moods: list[ImportedMood] = dataclasses.field(default_factory=list)
    observations: list[ImportedObservation] = dataclasses.field(default_factory=list)
    profile: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: SkipLog = dataclasses.field(default_factory=SkipLog)
    unmapped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def count_unmapped(self, name: str, times: int = 1) -> None:
        """Count what the file holds that PlanHer has no field for. A file's own names
        are bounded in number and length: a hostile file cannot grow the report."""
        name = name[:IMPORT_UNMAPPED_NAME_CHARS]
        if name not in self.unmapped and len(self.unmapped) >= IMPORT_MAX_UNMAPPED_NAMES:
            name = "(other names)"
        self.unmapped[name] += times


@dataclasses.dataclass
class DaySignals:
    """One day of a tracker's log as PlanHer can use it: bleeding, energy, words."""

    low_energy: bool = False
    high_energy: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    lh_test: str | None = None
    bbt_celsius: float | None = None
    cervical_mucus: str | None = None


SPOTTING_SKIPPED = "spotting (it never starts or extends a period)"
NOTE_CONTROL_CHARACTER = re.compile(f"[{NOTE_CONTROL_CHARACTERS}]")


def calendar_date(text: Any, where: str) -> dt.date:
    """The calendar day a tracker wrote, as written: `2025-01-06`, `2025-01-06T00:00:00Z`,
    `2025-01-06 00:00:00 +0100` and `20250106` are all 6 January, whatever the zone."""
    if isinstance(text, str):
        digits = text[:8] if re.fullmatch(r"\d{8}", text) else text[:10].replace("-", "")
        if re.fullmatch(r"\d{8}", digits) and (len(text) == 8 or text[4:5] == "-"):
            try:
                date = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
            except ValueError:
                pass
            else:
                if EARLIEST_DATE <= date <= LATEST_DATE:
                    return date
                raise MalformedFile(
                    f"{where}: dates must be between {EARLIEST_DATE} and {LATEST_DATE}"
                )
    raise MalformedFile(f"{where}: not a date (expected YYYY-MM-DD)")


def clean_note(text: str) -> str | None:
    """A note as PlanHer keeps it: no control characters, at most NOTES_MAX_CHARS."""
    text = NOTE_CONTROL_CHARACTER.sub(" ", text).strip()
    if len(text) > NOTES_MAX_CHARS:
        text = text[: NOTES_MAX_CHARS - 1] + "…"
    return text or None


def periods_from_bleeding_days(
    days: Iterable[dt.date], starts: Iterable[dt.date] = ()
) -> list[ImportedPeriod]:
    """Bleeding days grouped into periods: days at most BLEEDING_GAP_DAYS apart are one
    period, unless the tracker marked a day as a period's first (`starts`)."""
    marked_starts, periods = set(starts), []
    for day in sorted(set(days)):
        if periods and day not in marked_starts:
            last = periods[-1]
            if (day - last.end).days <= BLEEDING_GAP_DAYS + 1:
                periods[-1] = ImportedPeriod(last.start, day)
                continue
        periods.append(ImportedPeriod(day, day))
    return periods


def energy_from_signals(low: bool, high: bool) -> int | None:
    """A day's energy level from a tracker's low and high energy marks (both: medium)."""
    if low and high:
        return 1
    return 0 if low else 2 if high else None


def moods_from_days(days: Mapping[dt.date, DaySignals], skipped: SkipLog) -> list[ImportedMood]:
    """A mood for each day with an energy signal; words alone make no mood."""
    moods = []
    for date, day in sorted(days.items()):
        notes = clean_note("; ".join(dict.fromkeys(note for note in day.notes if note.strip())))
        level = energy_from_signals(day.low_energy, day.high_energy)
        if level is not None:
            moods.append(ImportedMood(date, level, notes))
        elif notes:
            skipped.add("day", "notes without an energy level (a mood needs one)", date)
    return moods


def observations_from_days(
    days: Mapping[dt.date, DaySignals], skipped: SkipLog
) -> list[ImportedObservation]:
    """An observation for each day with a fertility sign PlanHer records."""
    found = []
    for date, day in sorted(days.items()):
        celsius = day.bbt_celsius
        if celsius is not None and not BBT_MIN_CELSIUS <= celsius <= BBT_MAX_CELSIUS:
            skipped.add("observation", "a temperature outside 35–39 °C", date)
            celsius = None
        if day.lh_test or celsius is not None or day.cervical_mucus:
            found.append(
                ImportedObservation(
                    date,
                    day.lh_test,
                    None if celsius is None else round_half_up(celsius, 2),
                    day.cervical_mucus,
                )
            )
    return found


def temperature_celsius(text: Any, where: str) -> float | None:
    """A temperature as trackers write it: `36.45`, or nothing."""
    if text in (None, ""):
        return None
    try:
        celsius = float(text)
    except (TypeError, ValueError):
        raise MalformedFile(f"{where}: not a temperature") from None
    if not math.isfinite(celsius):
        raise MalformedFile(f"{where}: not a temperature")
    return celsius


def option_words(option: str) -> str:
    return option.replace("_", " ").strip()


def expect_type(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", str: "a string"}
        raise MalformedFile(f"{where}: expected {names.get(kind, kind.__name__)}")
    return value


def objects_of(value: Any, name: str | None) -> Iterator[tuple[str, dict]]:
    """The objects of the array `name` (None: the whole file), each with where it is."""
    for index, item in enumerate(expect_type(value, list, name or "the file")):
        where = f"element {index}" if name is None else f"{name}[{index}]"
        yield where, expect_type(item, dict, where)
