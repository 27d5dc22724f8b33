"""Clue: the measurements export and the full backup."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from planher.importers.history import (
    SPOTTING_SKIPPED,
    DaySignals,
    ImportedHistory,
    ImportedPeriod,
    MalformedFile,
    calendar_date,
    clean_note,
    expect_type,
    moods_from_days,
    objects_of,
    observations_from_days,
    option_words,
    periods_from_bleeding_days,
)

CLUE_BLEEDING = frozenset({"light", "medium", "heavy", "very_heavy"})
CLUE_LOW_ENERGY = frozenset({"tired", "exhausted"})
CLUE_HIGH_ENERGY = frozenset({"energetic", "fully_energized"})
CLUE_NOTE_TYPES = frozenset({"feelings", "mind"})
CLUE_LH_TESTS = {"ovulation_positive": "positive", "ovulation_negative": "negative"}


def _options(value: Any, where: str) -> list[str]:
    entries = value if isinstance(value, list) else [value]
    options = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("option"), str):
            raise MalformedFile(f'{where}.value: expected {{"option": …}} entries')
        options.append(entry["option"])
    return options


def read_clue_measurements(data: Any) -> ImportedHistory:
    history = ImportedHistory("clue")
    bleeding: list[dt.date] = []
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    for where, entry in objects_of(data, None):
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise MalformedFile(f"{where}: no `type`")
        date = calendar_date(entry.get("date"), f"{where}.date")
        if kind == "period":
            option = _options(entry.get("value"), where)[0]
            if option in CLUE_BLEEDING:
                bleeding.append(date)
            else:
                history.count_unmapped(f"period.{option}")
        elif kind == "spotting":
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif kind in CLUE_SIGNAL_READERS:
            CLUE_SIGNAL_READERS[kind](_options(entry.get("value"), where), days[date], history)
        else:
            history.count_unmapped(kind)
    history.periods = periods_from_bleeding_days(bleeding)
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


def _read_energy(options: list[str], day: DaySignals, history: ImportedHistory) -> None:
    for option in options:
        day.low_energy |= option in CLUE_LOW_ENERGY
        day.high_energy |= option in CLUE_HIGH_ENERGY
        if option not in CLUE_LOW_ENERGY | CLUE_HIGH_ENERGY:
            history.count_unmapped(f"energy.{option}")


def _read_tests(options: list[str], day: DaySignals, history: ImportedHistory) -> None:
    for option in options:
        if option in CLUE_LH_TESTS:
            day.lh_test = CLUE_LH_TESTS[option]
        else:
            history.count_unmapped(f"tests.{option}")


def _read_notes(options: list[str], day: DaySignals, history: ImportedHistory) -> None:
    day.notes += [option_words(option) for option in options]


# What each of the measurement types that carry a day's signals says of her day.
CLUE_SIGNAL_READERS: dict[str, Callable[[list[str], DaySignals, ImportedHistory], None]] = {
    "energy": _read_energy,
    "tests": _read_tests,
    **{kind: _read_notes for kind in CLUE_NOTE_TYPES},
}


CLUE_BACKUP_BLEEDING = frozenset({"light", "medium", "heavy"})
CLUE_BACKUP_DAY_KEYS = ("day", "period", "marks_excluded_cycle", "cycle_exclusion_notes")
EMPTY_VALUES = (None, "", [], {}, False)  # real backups: ~20 keys a day, mostly []
CLUE_BACKUP_SETTINGS = {"cycleLength": "cycle_length", "periodLength": "menses_length"}


def read_clue_backup(data: Any) -> ImportedHistory:
    history = ImportedHistory("clue_backup")
    expect_type(data, dict, "the backup")
    bleeding, set_aside = [], {}
    for where, day in objects_of(data.get("data"), "data"):
        date = calendar_date(day.get("day"), f"{where}.day")
        # In real backups the flag sits on the first bleeding day of the excluded cycle's
        # period: a real period day, and the period starts a cycle she set aside.
        if day.get("marks_excluded_cycle") is True:
            note = day.get("cycle_exclusion_notes")
            set_aside[date] = clean_note(note) if isinstance(note, str) else None
        flow = day.get("period")
        if flow in CLUE_BACKUP_BLEEDING:
            bleeding.append(date)
        elif flow == "spotting":
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif flow is not None:
            raise MalformedFile(f"{where}.period: expected spotting, light, medium or heavy")
        for key, value in day.items():
            if key not in CLUE_BACKUP_DAY_KEYS and value not in EMPTY_VALUES:
                history.count_unmapped(key)
    history.periods = [
        excluded_if_flagged(period, set_aside) for period in periods_from_bleeding_days(bleeding)
    ]
    read_clue_backup_settings(data, history)
    return history


def read_clue_backup_settings(data: dict, history: ImportedHistory) -> None:
    """Her cycle and period lengths as she set them in Clue, as her profile's."""
    try:
        averages = data["settings"]["user_defaults"][0]["defaults"]["user_defined_averages"]
    except (KeyError, IndexError, TypeError):
        averages = {}
    for name, value in averages.items():
        if name in CLUE_BACKUP_SETTINGS and isinstance(value, int | float):
            history.profile[CLUE_BACKUP_SETTINGS[name]] = round(value)
        else:
            history.count_unmapped(f"settings.{name}")


def excluded_if_flagged(
    period: ImportedPeriod, set_aside: dict[dt.date, str | None]
) -> ImportedPeriod:
    """The period, set aside with her note if one of its days carries Clue's flag."""
    flagged = [day for day in set_aside if period.start <= day <= period.end]
    if not flagged:
        return period
    return dataclasses.replace(period, excluded=True, notes=set_aside[min(flagged)])
