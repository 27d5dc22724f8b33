"""Flo's JSON export."""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

from planher.importers.history import (
    DaySignals,
    ImportedHistory,
    ImportedPeriod,
    calendar_date,
    expect_type,
    moods_from_days,
    objects_of,
    observations_from_days,
)


def read_flo(data: Any) -> ImportedHistory:
    history = ImportedHistory("flo")
    expect_type(data, dict, "the export")
    operational = expect_type(data.get("operationalData"), dict, "operationalData")
    for where, cycle in objects_of(operational.get("cycles", []), "cycles"):
        start = calendar_date(cycle.get("period_start_date"), f"{where}.period_start_date")
        if cycle.get("pregnant") is True:
            history.skipped.add("period", "a pregnancy, not a period", start)
            continue
        end = cycle.get("period_end_date")
        history.periods.append(
            ImportedPeriod(
                start, None if end is None else calendar_date(end, f"{where}.period_end_date")
            )
        )
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    events = operational.get("point_events_manual_v2", [])
    for where, event in objects_of(events, "point_events_manual_v2"):
        category, subcategory = event.get("category"), event.get("subcategory")
        date_key = "local_date" if "local_date" in event else "date"
        date = calendar_date(event.get(date_key), f"{where}.{date_key}")
        if (category, subcategory) == ("Mood", "Energetic"):
            days[date].high_energy = True
        elif (category, subcategory) == ("Symptom", "Fatigue"):
            days[date].low_energy = True
        elif category == "Mood" and isinstance(subcategory, str):
            days[date].notes.append(subcategory)
        elif category == "OvulationTest" and subcategory in ("Positive", "Negative"):
            days[date].lh_test = subcategory.lower()
        else:
            history.count_unmapped(f"{category}/{subcategory}")
    for key in data.keys() - {"operationalData"}:
        history.count_unmapped(key)
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history
