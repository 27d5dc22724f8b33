"""The iCalendar feed, built directly."""

import datetime as dt

from conftest import D, calendar, days
from planher.calendar_feed import calendar_feed_ics, predicted_periods


def test_predicted_periods_follow_the_estimate_and_their_ranges_widen():
    cal = calendar((D, D + days(4)), (D + days(28), D + days(32)), (D + days(56), D + days(60)))
    predicted = predicted_periods(cal, D + days(60), 6)
    assert [p.start for p in predicted] == [D + days(84 + 28 * k) for k in range(6)]
    widths = [(p.range[1] - p.range[0]).days for p in predicted]
    assert widths == sorted(widths) and widths[-1] > widths[0]
    first = predicted[0]
    assert first.fertile_window == (D + days(84 - 15 - 5), D + days(84 - 15 + 1))
    assert predicted_periods(calendar(), D, 6) == []


def test_the_feed_is_valid_icalendar_with_all_day_events():
    import icalendar

    cal = calendar((D, D + days(4)), (D + days(28), None))
    rows = [
        {"id": 1, "start_date": D, "end_date": D + days(4)},
        {"id": 2, "start_date": D + days(28), "end_date": None},
    ]
    ics = calendar_feed_ics(rows, cal, D + days(30), "key", dt.datetime(2026, 3, 31, 9))
    parsed = icalendar.Calendar.from_ical(ics)
    events = list(parsed.walk("VEVENT"))
    assert len(events) == 2 + 2 * 6
    assert len({str(event["UID"]) for event in events}) == len(events)
    open_period = next(e for e in events if str(e["UID"]).startswith("period-2-"))
    assert open_period["DTEND"].dt == D + days(28 + cal.menses_length)  # menses_length assumed
