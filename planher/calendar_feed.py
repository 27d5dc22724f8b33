"""The iCalendar feed (RFC 5545): her logged periods, predicted periods and fertile windows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any

import icalendar

from planher.config import (
    CALENDAR_PREDICTED_PERIODS,
    FERTILE_DAYS_AFTER_OVULATION,
    FERTILE_DAYS_BEFORE_OVULATION,
)
from planher.cycles.calendar import CycleCalendar, PeriodSpan

REMINDER_LOCAL_TIME = dt.time(9, 0)  # in her time zone, on the day she asked to be told


@dataclasses.dataclass(frozen=True)
class Reminder:
    """An alarm `days_before` each predicted period, at REMINDER_LOCAL_TIME in `time_zone`."""

    days_before: int
    time_zone: str

    def at(self, period_start: dt.date) -> dt.datetime:
        """When to remind her, in UTC: a fixed instant, so a daylight-saving change between
        now and then cannot move it off 09:00 her time."""
        day = period_start - dt.timedelta(days=self.days_before)
        local = dt.datetime.combine(day, REMINDER_LOCAL_TIME, zoneinfo.ZoneInfo(self.time_zone))
        return local.astimezone(dt.UTC)


@dataclasses.dataclass(frozen=True)
class PredictedPeriod:
    number: int  # 1 for the next period, 2 for the one after…
    start: dt.date
    range: tuple[dt.date, dt.date]
    fertile_window: tuple[dt.date, dt.date]  # of the cycle that this period ends


def predicted_periods(calendar: CycleCalendar, today: dt.date, count: int) -> list[PredictedPeriod]:
    """Her next `count` periods, each with its likely range (wider the further ahead: the
    lengths of the cycles between add up, and so do their uncertainties) and the fertile
    window of the cycle before it."""
    outlook = calendar.outlook(today, today)
    if outlook["next_period_start"] is None:
        return []
    last_start, length = outlook["last_period_start"], calendar.estimate.median
    until_then = calendar.open_cycle_seen_on(today).forecast
    predicted = []
    for number in range(1, count + 1):
        start = outlook["next_period_start"] + dt.timedelta(days=(number - 1) * length)
        range_ = tuple(outlook["next_period_range"])
        ovulation = start - dt.timedelta(days=calendar.luteal_length + 1)
        fertile_window = (
            ovulation - dt.timedelta(days=FERTILE_DAYS_BEFORE_OVULATION),
            ovulation + dt.timedelta(days=FERTILE_DAYS_AFTER_OVULATION),
        )
        if number == 1:  # this cycle's: where her observations may have placed it
            fertile_window = tuple(outlook["fertile_window"])
        else:
            until_then = until_then.then(calendar.estimate)
            earliest, latest = (last_start + dt.timedelta(days=d) for d in until_then.interval)
            range_ = (min(earliest, start), max(latest, start))
        predicted.append(PredictedPeriod(number, start, range_, fertile_window))
    return predicted


def calendar_feed_ics(
    periods: Sequence[Mapping[str, Any]],
    calendar: CycleCalendar,
    today: dt.date,
    feed_key: str,
    now: dt.datetime,
    reminder: Reminder | None = None,
) -> bytes:
    """Her calendar as iCalendar: logged periods, the next predicted ones and their fertile
    windows, as all-day events. UIDs are stable (a logged period's row id; a prediction's
    place after her latest logged start), so calendar apps update events, not repeat them.
    With a `reminder`, each predicted period carries an alarm (VALARM, DISPLAY)."""
    feed = icalendar.Calendar()
    feed.add("prodid", "-//PlanHer//Cycle calendar//EN")
    feed.add("version", "2.0")
    feed.add("calscale", "GREGORIAN")
    feed.add("method", "PUBLISH")
    feed.add("x-wr-calname", "PlanHer")
    feed.add("refresh-interval", dt.timedelta(hours=6), parameters={"VALUE": "DURATION"})
    feed.add("x-published-ttl", "PT6H")

    def event(
        uid: str,
        summary: str,
        first: dt.date,
        last: dt.date,
        description: str,
        alarm: dt.datetime | None = None,
    ) -> None:
        entry = icalendar.Event()
        entry.add("uid", f"{uid}-{feed_key}@planher")
        entry.add("dtstamp", now.replace(tzinfo=dt.UTC))
        entry.add("dtstart", first)
        entry.add("dtend", last + dt.timedelta(days=1))  # all-day: the end is exclusive
        entry.add("summary", summary)
        entry.add("description", description)
        entry.add("transp", "TRANSPARENT")
        if alarm is not None:
            entry.add_component(period_alarm(alarm, first))
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
            None if reminder is None else reminder.at(predicted.start),
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


def period_alarm(at: dt.datetime, period_start: dt.date) -> icalendar.Alarm:
    alarm = icalendar.Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", at, parameters={"VALUE": "DATE-TIME"})
    alarm.add("description", f"Your period is predicted to start {period_start}.")
    return alarm
