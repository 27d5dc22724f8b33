"""What every importer shares: periods from bleeding days, energy, dates, notes, the report."""

import datetime as dt

import pytest

from conftest import D, days
from planher.config import (
    IMPORT_MAX_UNMAPPED_NAMES,
    IMPORT_UNMAPPED_NAME_CHARS,
    NOTES_MAX_CHARS,
)
from planher.importers.clue import read_clue_measurements
from planher.importers.history import (
    ImportedPeriod,
    MalformedFile,
    calendar_date,
    clean_note,
    energy_from_signals,
    periods_from_bleeding_days,
)


def test_bleeding_days_one_day_apart_are_one_period_and_marked_starts_split_them():
    bleeding = [D, D + days(1), D + days(3), D + days(4), D + days(8)]
    assert periods_from_bleeding_days(bleeding) == [
        ImportedPeriod(D, D + days(4)),  # one day without bleeding does not end it
        ImportedPeriod(D + days(8), D + days(8)),
    ]
    assert periods_from_bleeding_days(bleeding, starts=[D + days(3)])[:2] == [
        ImportedPeriod(D, D + days(1)),
        ImportedPeriod(D + days(3), D + days(4)),
    ]
    assert periods_from_bleeding_days([D, D, D + days(1)]) == [
        ImportedPeriod(D, D + days(1))
    ]


def test_energy_signals_map_low_high_and_both():
    assert energy_from_signals(low=True, high=False) == 0
    assert energy_from_signals(low=False, high=True) == 2
    assert energy_from_signals(low=True, high=True) == 1
    assert energy_from_signals(low=False, high=False) is None


@pytest.mark.parametrize(
    "written",
    [
        "2025-01-06",
        "2025-01-06T00:00:00Z",
        "2025-01-06 00:00:00 +0100",
        "2025-01-06 23:59:59 -1100",
        "2025-01-06 00:00:00.0",
        "20250106",
    ],
)
def test_a_trackers_date_is_the_calendar_day_as_written(written):
    assert calendar_date(written, "here") == dt.date(2025, 1, 6)


@pytest.mark.parametrize("written", ["2025-13-01", "06.01.2025", "", None, 20250106, "1800-01-01"])
def test_a_date_that_is_not_one_is_malformed_and_says_where(written):
    with pytest.raises(MalformedFile, match="^line 7"):
        calendar_date(written, "line 7")


def test_notes_lose_control_characters_and_are_cut_to_the_limit():
    assert clean_note("a\x00b\tc\nd") == "a b\tc\nd"
    assert clean_note("  ") is None
    long = clean_note("x" * 5000)
    assert len(long) == NOTES_MAX_CHARS and long.endswith("…")


def test_a_file_cannot_grow_the_report_with_names_of_its_own():
    entries = [
        {"type": f"kind-{n}-" + "x" * 500, "date": "2025-01-06", "value": []} for n in range(500)
    ]
    history = read_clue_measurements(entries)
    assert len(history.unmapped) == IMPORT_MAX_UNMAPPED_NAMES + 1
    assert history.unmapped["(other names)"] == 500 - IMPORT_MAX_UNMAPPED_NAMES
    assert max(map(len, history.unmapped)) == IMPORT_UNMAPPED_NAME_CHARS
