"""The iCalendar feed (RFC 5545): her logged periods, predicted periods and fertile windows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import icalendar

from planher.config import (
    CALENDAR_PREDICTED_PERIODS,
    FERTILE_DAYS_AFTER_OVULATION,
    FERTILE_DAYS_BEFORE_OVULATION,
)
from planher.cycles.calendar import CycleCalendar, PeriodSpan


@dataclasses.dataclass(frozen=True)
class PredictedPeriod:
    number: int  # 1 for the next period, 2 for the one after…
    start: dt.date
    range: tuple[dt.date, dt.date]
    fertile_window: tuple[dt.date, dt.date]  # of the cycle that this period ends


def predicted_periods(calendar: CycleCalendar, today: dt.date, count: int) -> list[PredictedPeriod]:
    """Her next `count` periods, each with its likely range (wider the further ahead: the
    errors of successive cycles add up) and the fertile window of the cycle before it."""
    outlook = calendar.outlook(today, today)
    if outlook["next_period_start"] is None:
        return []
    length, range_days = calendar.estimate.length, calendar.estimate.range_days
    first_range_days = (outlook["next_period_start"] - outlook["next_period_range"][0]).days
    predicted = []
    for number in range(1, count + 1):
        start = outlook["next_period_start"] + dt.timedelta(days=(number - 1) * length)
        spread = dt.timedelta(
            days=round(math.sqrt(first_range_days**2 + (number - 1) * range_days**2))
        )
        ovulation = start - dt.timedelta(days=calendar.luteal_length + 1)
        fertile_window = (
            ovulation - dt.timedelta(days=FERTILE_DAYS_BEFORE_OVULATION),
            ovulation + dt.timedelta(days=FERTILE_DAYS_AFTER_OVULATION),
        )
        if number == 1:  # this cycle's: where her observations may have placed it
            fertile_window = tuple(outlook["fertile_window"])
        predicted.append(
            PredictedPeriod(number, start, (start - spread, start + spread), fertile_window)
        )
    return predicted


def calendar_feed_ics(
    periods: Sequence[Mapping[str, Any]],
    calendar: CycleCalendar,
    today: dt.date,
    feed_key: str,
    now: dt.datetime,
) -> bytes:
    """Her calendar as iCalendar: logged periods, the next predicted ones and their fertile
    windows, as all-day events. UIDs are stable (a logged period's row id; a prediction's
    place after her latest logged start), so calendar apps update events, not repeat them."""
    feed = icalendar.Calendar()
    feed.add("prodid", "-//PlanHer//Cycle calendar//EN")
    feed.add("version", "2.0")
    feed.add("calscale", "GREGORIAN")
    feed.add("method", "PUBLISH")
    feed.add("x-wr-calname", "PlanHer")
    feed.add("refresh-interval", dt.timedelta(hours=6), parameters={"VALUE": "DURATION"})
    feed.add("x-published-ttl", "PT6H")

    def event(uid: str, summary: str, first: dt.date, last: dt.date, description: str) -> None:
        entry = icalendar.Event()
        entry.add("uid", f"{uid}-{feed_key}@planher")
        entry.add("dtstamp", now.replace(tzinfo=dt.UTC))
        entry.add("dtstart", first)
        entry.add("dtend", last + dt.timedelta(days=1))  # all-day: the end is exclusive
        entry.add("summary", summary)
        entry.add("description", description)
        entry.add("transp", "TRANSPARENT")
        feed.add_component(entry)

    for row in periods:
        last = calendar.effective_end(PeriodSpan(row["start_date"], row["end_date"]))
        logged = "Logged" if row["end_date"] else "Logged; the end is not logged yet"
        event(f"period-{row['id']}", "Period", row["start_date"], last, logged + ".")
    anchor = calendar.periods[-1].start.isoformat() if calendar.periods else "profile"
    for predicted in predicted_periods(calendar, today, CALENDAR_PREDICTED_PERIODS):
        earliest, latest = predicted.range
        event(
            f"predicted-period-{anchor}-{predicted.number}",
            "Period (predicted)",
            predicted.start,
            predicted.start + dt.timedelta(days=calendar.menses_length - 1),
            f"Predicted to start {predicted.start}, likely between {earliest} and {latest}.",
        )
        first, last = predicted.fertile_window
        event(
            f"fertile-window-{anchor}-{predicted.number}",
            "Fertile window (estimated)",
            first,
            last,
            "Estimated from her cycle length and luteal phase; not contraception.",
        )
    return feed.to_ical()
