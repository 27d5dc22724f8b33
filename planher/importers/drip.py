"""drip's CSV export."""

from __future__ import annotations

import collections
import csv
import datetime as dt
from collections.abc import Iterable

from planher.importers.history import (
    SPOTTING_SKIPPED,
    DaySignals,
    ImportedHistory,
    MalformedFile,
    calendar_date,
    moods_from_days,
    observations_from_days,
    periods_from_bleeding_days,
    temperature_celsius,
)

DRIP_LOW_ENERGY, DRIP_HIGH_ENERGY = "mood.fatigue", "mood.energetic"
DRIP_MOOD_WORDS = ("happy", "sad", "stressed", "balanced", "fine", "anxious", "angry", "other")
# drip scores mucus as the sympto-thermal method does (its lib/nfp-mucus.js): the value is the
# larger of the feeling's and the texture's scores, and its order is the order of fertility.
DRIP_MUCUS = {"0": "dry", "1": "dry", "2": "sticky", "3": "creamy", "4": "egg_white"}
DRIP_MUCUS_FEELING_SCORES = {"0": 0, "1": 1, "2": 2, "3": 4}  # dry, nothing, wet, slippery
DRIP_MUCUS_TEXTURE_SCORES = {"0": 0, "1": 3, "2": 4}  # nothing, creamy, egg white
DRIP_USED_COLUMNS = frozenset(
    {"date", "bleeding.value", "bleeding.exclude", "note.value", "mood.note"}
    | {"temperature.value", "temperature.exclude", "mucus.value", "mucus.exclude"}
    | {"mucus.feeling", "mucus.texture"}
    | {DRIP_LOW_ENERGY, DRIP_HIGH_ENERGY}
    | {f"mood.{word}" for word in DRIP_MOOD_WORDS}
)


class DripRow:
    """One line of the export, its cells read as drip writes them."""

    def __init__(self, row: dict[str, str | None], where: str) -> None:
        self.row, self.where = row, where

    def text(self, column: str) -> str:
        return (self.row.get(column) or "").strip()

    def flag(self, column: str) -> bool:
        value = self.text(column)
        if value not in ("", "true", "false"):
            raise MalformedFile(f"{self.where}: {column} must be true or false")
        return value == "true"


def read_drip_csv(text: Iterable[str]) -> ImportedHistory:
    history = ImportedHistory("drip")
    reader = csv.DictReader(text)
    if reader.fieldnames is None or not {"date", "bleeding.value"} <= set(reader.fieldnames):
        raise MalformedFile("line 1: a drip export's header names `date` and `bleeding.value`")
    bleeding: list[dt.date] = []
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    for row in reader:
        line = DripRow(row, f"line {reader.line_num}")
        if None in row:
            raise MalformedFile(f"{line.where}: more cells than the header has columns")
        date = calendar_date(row["date"], f"{line.where}, date")
        if bleeding_of(line, date, history):
            bleeding.append(date)
        read_signals(line, days[date])
        for column, cell in row.items():
            if column not in DRIP_USED_COLUMNS and cell not in (None, "", "false"):
                history.count_unmapped(column)
    history.periods = periods_from_bleeding_days(bleeding)
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


def bleeding_of(line: DripRow, date: dt.date, history: ImportedHistory) -> bool:
    """Whether the line is a day of her period; spotting and bleeding she excluded are
    skipped, and said so."""
    value = line.text("bleeding.value")
    if value not in ("", "0", "1", "2", "3"):
        raise MalformedFile(f"{line.where}: bleeding.value must be 0, 1, 2 or 3")
    if value == "0":
        history.skipped.add("day", SPOTTING_SKIPPED, date)
        return False
    if value and line.flag("bleeding.exclude"):
        history.skipped.add("day", "bleeding she marked as not her period", date)
        return False
    return bool(value)


def read_signals(line: DripRow, day: DaySignals) -> None:
    """Temperature, mucus, energy, notes and mood words, as the day's signals."""
    if not line.flag("temperature.exclude"):
        day.bbt_celsius = temperature_celsius(
            line.row.get("temperature.value"), f"{line.where}, temperature.value"
        )
    mucus = mucus_value(line)
    if mucus and not line.flag("mucus.exclude"):
        day.cervical_mucus = DRIP_MUCUS[mucus]
    day.low_energy, day.high_energy = line.flag(DRIP_LOW_ENERGY), line.flag(DRIP_HIGH_ENERGY)
    day.notes += [line.row.get("note.value") or "", line.row.get("mood.note") or ""]
    day.notes += [word for word in DRIP_MOOD_WORDS if line.flag(f"mood.{word}")]


def mucus_value(line: DripRow) -> str:
    """drip's mucus value; when the cell is empty, computed as drip does from the feeling
    and the texture, and only when both are there ('' for no mucus)."""
    value = line.text("mucus.value")
    if value:
        if value not in DRIP_MUCUS:
            raise MalformedFile(f"{line.where}: mucus.value must be 0 to 4")
        return value
    feeling, texture = line.text("mucus.feeling"), line.text("mucus.texture")
    if not feeling or not texture:
        return ""
    if feeling not in DRIP_MUCUS_FEELING_SCORES or texture not in DRIP_MUCUS_TEXTURE_SCORES:
        raise MalformedFile(f"{line.where}: mucus.feeling must be 0 to 3, mucus.texture 0 to 2")
    return str(max(DRIP_MUCUS_FEELING_SCORES[feeling], DRIP_MUCUS_TEXTURE_SCORES[texture]))
