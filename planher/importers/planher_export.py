"""PlanHer's own export, read back."""

from __future__ import annotations

from typing import Any

from pydantic import (
    ValidationError,
)

from planher.config import CYCLE_MAX_DAYS
from planher.importers.history import (
    ImportedHistory,
    ImportedMood,
    ImportedObservation,
    ImportedPeriod,
    MalformedFile,
    calendar_date,
    clean_note,
    expect_type,
    objects_of,
)
from planher.schemas.requests import OBSERVATION_SIGNS, PROFILE_FIELDS, ObservationBody, ProfileBody


def read_planher_export(data: Any) -> ImportedHistory:
    history = ImportedHistory("planher")
    expect_type(data, dict, "the export")
    if data.get("profile") is not None:
        history.profile = exported_profile(data["profile"])
    history.periods = [
        exported_period(period, where)
        for where, period in objects_of(data.get("periods"), "periods")
    ]
    history.moods = [
        exported_mood(mood, where) for where, mood in objects_of(data.get("moods"), "moods")
    ]
    history.observations = [
        exported_observation(sign, where)
        for where, sign in objects_of(data.get("observations", []), "observations")
    ]
    for key in ("user", "predictions", "models"):
        if data.get(key):
            history.count_unmapped(key, len(data[key]) if isinstance(data[key], list) else 1)
    return history


def exported_profile(profile: Any) -> dict[str, Any]:
    try:
        return ProfileBody.model_validate(
            {name: profile.get(name) for name in PROFILE_FIELDS}, strict=False
        ).model_dump()
    except (ValidationError, AttributeError):
        raise MalformedFile("profile: not a PlanHer profile") from None


def exported_notes(notes: Any, where: str) -> str | None:
    if notes is not None and not isinstance(notes, str):
        raise MalformedFile(f"{where}.notes: expected a string")
    return None if notes is None else clean_note(notes)


def exported_period(period: dict, where: str) -> ImportedPeriod:
    end, excluded = period.get("end_date"), period.get("excluded", False)
    notes = exported_notes(period.get("notes"), where)
    if not isinstance(excluded, bool):
        raise MalformedFile(f"{where}.excluded: expected true or false")
    return ImportedPeriod(
        calendar_date(period.get("start_date"), f"{where}.start_date"),
        None if end is None else calendar_date(end, f"{where}.end_date"),
        notes,
        excluded,
    )


def exported_mood(mood: dict, where: str) -> ImportedMood:
    level, day = mood.get("energy_level"), mood.get("day_of_cycle")
    if level not in (0, 1, 2) or isinstance(level, bool):
        raise MalformedFile(f"{where}.energy_level: expected 0, 1 or 2")
    if day is not None and (isinstance(day, bool) or day not in range(1, CYCLE_MAX_DAYS + 1)):
        raise MalformedFile(f"{where}.day_of_cycle: expected 1 to {CYCLE_MAX_DAYS}")
    notes = exported_notes(mood.get("notes"), where)
    return ImportedMood(calendar_date(mood.get("date"), f"{where}.date"), level, notes, day)


def exported_observation(sign: dict, where: str) -> ImportedObservation:
    try:
        read = ObservationBody.model_validate(
            {name: sign.get(name) for name in ("date", *OBSERVATION_SIGNS, "notes")},
            strict=False,
        )
    except ValidationError as error:
        field = ".".join(map(str, error.errors()[0]["loc"]))
        raise MalformedFile(f"{where}.{field}: {error.errors()[0]['msg']}") from None
    if read.date is None or all(getattr(read, name) is None for name in OBSERVATION_SIGNS):
        raise MalformedFile(f"{where}: an observation has a date and at least one sign")
    return ImportedObservation(**read.model_dump())
