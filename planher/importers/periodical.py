"""Periodical's JSON backup."""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

from planher.importers.history import (
    SPOTTING_SKIPPED,
    DaySignals,
    ImportedHistory,
    ImportedPeriod,
    MalformedFile,
    calendar_date,
    expect_type,
    moods_from_days,
    objects_of,
    observations_from_days,
    periods_from_bleeding_days,
    temperature_celsius,
)

PERIODICAL_VERSION = 6
PERIODICAL_OPTIONS = {"period_length": "menses_length", "luteal_length": "luteal_length"}
PERIODICAL_LOW_ENERGY, PERIODICAL_HIGH_ENERGY, PERIODICAL_SPOTTING = "20", "21", "19"
PERIODICAL_MOOD_WORDS = {"22": "sad", "14": "grumpiness", "23": "edgy"}


def read_periodical(data: Any) -> ImportedHistory:
    history = ImportedHistory("periodical")
    tables = periodical_tables(data)
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    history.periods = read_events(tables.get("data", []), days)
    for where, row in objects_of(tables.get("notes", []), "notes"):
        days[calendar_date(row.get("eventdate"), f"{where}.eventdate")].notes.append(
            str(row.get("content") or "")
        )
    read_symptoms(tables.get("symptoms", []), days, history)
    for _, row in objects_of(tables.get("options", []), "options"):
        name, value = row.get("name"), row.get("value")
        if name in PERIODICAL_OPTIONS and isinstance(value, str) and value.isdigit():
            history.profile[PERIODICAL_OPTIONS[name]] = int(value)
        else:
            history.count_unmapped(f"option {name}")
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


def periodical_tables(data: Any) -> dict[str, list]:
    """The backup's tables by name, after its version header."""
    expect_type(data, list, "the backup")
    if not data or not isinstance(data[0], dict) or data[0].get("version") != PERIODICAL_VERSION:
        raise MalformedFile(
            f"element 0: a Periodical backup starts with version {PERIODICAL_VERSION}"
        )
    tables: dict[str, list] = {}
    for index, table in enumerate(data[1:], start=1):
        expect_type(table, dict, f"element {index}")
        for name, rows in table.items():
            tables[name] = expect_type(rows, list, f"element {index}.{name}")
    return tables


def read_events(rows: list, days: dict[dt.date, DaySignals]) -> list[ImportedPeriod]:
    """Her periods from the `data` table's events (0: a temperature only, 1: a period's
    first day, 2: a later one), and each day's temperature."""
    bleeding, starts = [], []
    for where, row in objects_of(rows, "data"):
        date = calendar_date(row.get("eventdate"), f"{where}.eventdate")
        kind = row.get("eventtype")
        if kind not in ("0", "1", "2"):
            raise MalformedFile(f"{where}.eventtype: expected 0, 1 or 2")
        days[date].bbt_celsius = temperature_celsius(row.get("eventtemp"), f"{where}.eventtemp")
        if kind != "0":
            bleeding.append(date)
            if kind == "1":
                starts.append(date)
    return periods_from_bleeding_days(bleeding, starts)


def read_symptoms(rows: list, days: dict[dt.date, DaySignals], history: ImportedHistory) -> None:
    for where, row in objects_of(rows, "symptoms"):
        date, code = calendar_date(row.get("eventdate"), f"{where}.eventdate"), row.get("symptom")
        if code == PERIODICAL_LOW_ENERGY:
            days[date].low_energy = True
        elif code == PERIODICAL_HIGH_ENERGY:
            days[date].high_energy = True
        elif code == PERIODICAL_SPOTTING:
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif code in PERIODICAL_MOOD_WORDS:
            days[date].notes.append(PERIODICAL_MOOD_WORDS[code])
        else:
            history.count_unmapped(f"symptom {code}")
