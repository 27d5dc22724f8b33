"""Mensinator's JSON export."""

from __future__ import annotations

from typing import Any

from planher.importers.history import (
    ImportedHistory,
    calendar_date,
    expect_type,
    objects_of,
    periods_from_bleeding_days,
)


def read_mensinator(data: Any) -> ImportedHistory:
    history = ImportedHistory("mensinator")
    expect_type(data, dict, "the export")
    bleeding = []
    for where, row in objects_of(data.get("periods"), "periods"):
        bleeding.append(calendar_date(row.get("date"), f"{where}.date"))
    history.periods = periods_from_bleeding_days(bleeding)
    symptoms = {
        row.get("id"): row.get("symptom_name")
        for row in data.get("symptoms", [])
        if isinstance(row, dict)
    }
    for row in data.get("symptom_date", []):
        name = symptoms.get(row.get("symptom_id")) if isinstance(row, dict) else None
        if name not in ("Heavy_Flow", "Medium_Flow", "Light_Flow"):  # flow: the periods say it
            history.count_unmapped(f"symptom {name}")
    for key in ("ovulations", "app_settings"):
        history.count_unmapped(key, len(data.get(key) or []))
    return history
