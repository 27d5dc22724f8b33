"""Her cycles as a calendar: phases, outlook, projections (pure: no HTTP, no database)."""

import pytest

from conftest import D, calendar, days
from planher.cycles.calendar import PeriodSpan, phase_on_day
from planher.cycles.ovulation import FertilitySign


@pytest.mark.parametrize(
    "day, phase",
    [
        (1, "menstrual"),
        (5, "menstrual"),
        (6, "follicular"),
        (12, "follicular"),
        (13, "ovulatory"),
        (14, "ovulatory"),
        (15, "ovulatory"),
        (16, "luteal"),
        (28, "luteal"),
        (32, "luteal"),
        (33, "late"),
    ],
)
def test_phase_on_each_day_of_a_28_day_cycle(day, phase):
    assert phase_on_day(day, 28, 5, 14, late_after_day=32) == phase


def test_day_of_cycle_counts_from_the_latest_start_on_or_before_the_date():
    cal = calendar((D, D + days(4)), (D + days(30), None))
    assert cal.cycle_day(D - days(1)) is None
    assert cal.cycle_day(D).day_of_cycle == 1
    assert cal.cycle_day(D + days(29)).day_of_cycle == 30
    assert cal.cycle_day(D + days(30)).day_of_cycle == 1
    assert cal.cycle_day(D + days(30 + 89)).day_of_cycle == 90
    assert cal.cycle_day(D + days(30 + 90)) is None  # too long since her last period to say


def test_a_completed_cycle_places_ovulation_by_its_real_length():
    cal = calendar((D, D + days(3)), (D + days(34), None))
    assert cal.cycle_day(D + days(3)).phase == "menstrual"  # her logged end, day 4
    assert cal.cycle_day(D + days(4)).phase == "follicular"
    assert cal.cycle_day(D + days(19)).phase == "ovulatory"  # day 20 = 34 − 14
    assert cal.cycle_day(D + days(33)).phase == "luteal"


def test_an_open_cycle_becomes_late_past_the_predicted_range():
    cal = calendar((D, None), profile={"cycle_length": 28, "luteal_length": 14, "menses_length": 4})
    late_after = cal.late_after_day
    assert late_after == cal.estimate.interval[1] > 28
    assert cal.cycle_day(D + days(3)).phase == "menstrual"  # menses_length days when open
    assert cal.cycle_day(D + days(4)).phase == "follicular"
    assert cal.cycle_day(D + days(late_after - 1)).phase == "luteal"
    assert cal.cycle_day(D + days(late_after)).phase == "late"


def test_outlook_gives_the_next_start_its_range_and_the_fertile_window():
    starts = [D + days(29 * k) for k in range(6)]
    cal = calendar(*[(start, None) for start in starts])
    last = starts[-1]
    outlook = cal.outlook(last + days(10))
    assert outlook["length_estimate"] == 29
    assert outlook["last_period_start"] == last
    assert outlook["next_period_start"] == last + days(29)
    low, high = outlook["next_period_range"]
    assert low < last + days(29) < high
    assert (low - last).days, (high - last).days == cal.estimate.interval
    assert outlook["days_until_next_period"] == 19
    ovulation = last + days(29 - 14 - 1)  # day 15 of the cycle
    assert outlook["fertile_window"] == [ovulation - days(5), ovulation + days(1)]


def test_outlook_without_periods_still_estimates_the_length_from_the_profile():
    outlook = calendar(profile={"cycle_length": 32}).outlook(D)
    assert outlook["length_estimate"] == 32
    assert outlook["next_period_start"] is None and outlook["fertile_window"] is None


def test_overlap_treats_an_open_period_as_menses_length_days():
    cal = calendar((D, None), (D + days(40), D + days(44)))
    span = PeriodSpan
    assert cal.overlapping(span(D + days(4), None)).start == D
    assert cal.overlapping(span(D + days(5), D + days(6))) is None
    assert cal.overlapping(span(D + days(35), D + days(40))).start == D + days(40)
    assert cal.overlapping(span(D + days(41), None), ignore_start=D + days(40)) is None


def test_future_dates_are_projected_in_cycles_of_the_estimated_length():
    cal = calendar((D, D + days(4)), profile={"cycle_length": 30})
    today = D + days(10)
    assert cal.cycle_day(D + days(29), today).day_of_cycle == 30
    projected = cal.cycle_day(D + days(30), today)
    assert (projected.day_of_cycle, projected.phase, projected.start) == (
        1,
        "menstrual",
        D + days(30),
    )
    assert cal.cycle_day(D + days(65), today).day_of_cycle == 6
    outlook = cal.outlook(D + days(65), today)
    assert outlook["last_period_start"] == D + days(60)
    assert outlook["next_period_start"] == D + days(90)


def test_a_woman_late_today_stays_late_in_the_projection():
    cal = calendar((D, None))
    today = D + days(cal.late_after_day + 2)
    assert cal.cycle_day(today).phase == "late"
    assert cal.cycle_day(today + days(5), today).phase == "late"


def test_days_until_next_period_counts_down_to_the_next_start():
    cal = calendar((D, None))
    cycle, length = cal.cycle_day(D + days(20)), cal.estimate.median
    assert (cycle.day_of_cycle, cycle.cycle_length, cycle.days_until_next_period) == (
        21,
        length,
        length - 20,
    )


def regular_then_open(open_days: int, lengths=(28,) * 6):
    """Cycles of `lengths` days, then the open one, begun `open_days` days before D."""
    starts = [D - days(open_days)]
    for length in reversed(lengths):
        starts.insert(0, starts[0] - days(length))
    return calendar(*[(start, None) for start in starts]), starts[-1]


def test_a_cycle_past_its_estimate_is_forecast_from_today_on_with_days_late():
    cal, last = regular_then_open(35)
    outlook = cal.outlook(D, D)
    assert outlook["days_late"] == 7
    assert outlook["next_period_start"] >= D
    assert D <= outlook["next_period_range"][0] <= outlook["next_period_start"]
    assert cal.cycle_day(D, D).phase == "late"
    assert cal.cycle_day(D + days(1), D).phase == "late"  # no projection past a late day


def test_before_its_estimate_the_start_stays_and_its_range_starts_no_earlier_than_today():
    cal, last = regular_then_open(27)
    outlook = cal.outlook(D, D)
    assert outlook["days_late"] is None and outlook["next_period_start"] == last + days(28)
    assert outlook["next_period_range"][0] >= D
    just_late, last = regular_then_open(29, (25, 31, 27, 29, 26, 30))
    outlook = just_late.outlook(D, D)
    assert outlook["days_late"] == 1 and outlook["next_period_start"] >= D
    next_start = outlook["next_period_start"]
    a_later_day = max(next_start, D + days(1))  # her today stays in the open cycle
    projected = just_late.cycle_day(a_later_day, D)
    assert projected.start == next_start  # the forecast days follow the followed start
    assert projected.day_of_cycle == (a_later_day - next_start).days + 1


def test_days_late_counts_from_the_beginning_estimate_even_when_ovulation_moved_the_start():
    cal, last = regular_then_open(30)
    late_ovulation = FertilitySign(last + days(20), lh_test="positive")  # ovulation day 22
    with_signs = calendar(*[(p.start, None) for p in cal.periods], signs=[late_ovulation])
    outlook = with_signs.outlook(D, D)
    assert outlook["ovulation"]["evidence"] == "lh"
    assert outlook["next_period_start"] > D  # ovulation + her luteal phase: still ahead
    assert outlook["days_late"] == 2  # past the 28 days her cycles gave at its beginning
