"""The import plan: hers wins, and every period kept obeys the rules."""

from conftest import D, calendar, days
from planher.importers.history import (
    ImportedHistory,
    ImportedMood,
    ImportedPeriod,
)
from planher.importers.plan import plan_import


def imported(*periods, moods=()) -> ImportedHistory:
    return ImportedHistory(
        "drip",
        periods=[ImportedPeriod(start, end) for start, end in periods],
        moods=[ImportedMood(date, 1) for date in moods],
    )


def test_the_import_plan_keeps_hers_and_leaves_out_overlaps_the_future_and_long_periods():
    stored = calendar((D, D + days(4)))
    history = imported(
        (D + days(2), D + days(5)),  # overlaps hers
        (D + days(30), D + days(34)),
        (D + days(33), D + days(36)),  # overlaps the one before, from the same file
        (D + days(60), D + days(80)),  # 21 days
        (D + days(90), D + days(95)),  # under way today: its end is hers to log
        (D + days(120), D + days(121)),  # the future
        moods=[D + days(1), D + days(40), D + days(200)],
    )
    plan = plan_import(history, stored, {D + days(1)}, set(), False, D + days(92), None)
    assert plan.periods == [
        ImportedPeriod(D + days(30), D + days(34)),
        ImportedPeriod(D + days(90), None),
    ]
    assert [mood.date for mood in plan.moods] == [D + days(40)]
    assert {
        (what, reason): len(dates) for (what, reason), dates in plan.skipped.entries.items()
    } == {
        ("period", "overlaps a period she already logged"): 1,
        ("period", "overlaps another period in the file"): 1,
        ("period", "lasts more than 15 days"): 1,
        ("period", "starts in the future"): 1,
        ("mood", "she already logged that day's mood"): 1,
        ("mood", "in the future"): 1,
    }


def test_a_profile_is_made_only_from_a_whole_one_and_never_over_hers():
    settings = ImportedHistory("clue_backup", profile={"cycle_length": 30})
    plan = plan_import(settings, calendar(), set(), set(), False, D, None)
    assert plan.profile is None and ("profile",) == tuple(w for w, _ in plan.skipped.entries)
    whole = {
        "height_cm": 160,
        "weight_kg": 55.0,
        "cycle_length": 30,
        "luteal_length": 14,
        "menses_length": 5,
        "unusual_bleeding": False,
        "number_of_peak": 2,
    }
    export = ImportedHistory("planher", profile=whole)
    assert plan_import(export, calendar(), set(), set(), False, D, None).profile == whole
    assert plan_import(export, calendar(), set(), set(), True, D, None).profile is None
