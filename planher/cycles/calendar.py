"""Her cycles as a calendar: phases, the next period, the fertile window (pure: no I/O)."""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from planher.config import (
    CYCLE_MAX_DAYS,
    CYCLE_MIN_DAYS,
    DEFAULT_LUTEAL_LENGTH,
    DEFAULT_MENSES_LENGTH,
    FERTILE_DAYS_AFTER_OVULATION,
    FERTILE_DAYS_BEFORE_OVULATION,
    OVULATORY_HALF_WIDTH,
    POPULATION_LUTEAL_SD,
)
from planher.cycles.length_forecast import LengthForecast
from planher.cycles.lengths import LutealEstimate, cycle_lengths, estimate_luteal_length
from planher.cycles.ovulation import FertilitySign, Ovulation, luteal_lengths, ovulations_by_cycle
from planher.cycles.population import BUILT_IN_POPULATION, CyclePopulation

PHASES = ("menstrual", "follicular", "ovulatory", "luteal", "late")


def phase_on_day(
    day_of_cycle: int,
    cycle_length: int,
    bleeding_days: int,
    luteal_length: int,
    late_after_day: int | None = None,
) -> str:
    """The phase on a day of a cycle. Ovulation is `luteal_length` days before the cycle
    ends; `late_after_day` is where an open cycle's predicted range ends."""
    if day_of_cycle <= bleeding_days:
        return "menstrual"
    if late_after_day is not None and day_of_cycle > late_after_day:
        return "late"
    ovulation_day = cycle_length - luteal_length
    if abs(day_of_cycle - ovulation_day) <= OVULATORY_HALF_WIDTH:
        return "ovulatory"
    return "follicular" if day_of_cycle < ovulation_day else "luteal"


@dataclasses.dataclass(frozen=True)
class OpenCycle:
    """Her latest cycle, not over yet, as seen at its beginning (or from the ovulation her
    observations show): how long it may last, and its luteal phase."""

    forecast: LengthForecast
    luteal_length: int
    ovulation: Ovulation | None

    @property
    def length(self) -> int:
        return self.forecast.median

    @property
    def latest(self) -> int:
        """The last day of its range: past it, she is late."""
        return self.forecast.interval[1]


@dataclasses.dataclass(frozen=True)
class SeenOnDay:
    """Her open cycle as seen on a day with no period since its start: once that day is
    past the beginning-of-cycle estimate, what a cycle already that long is likely to do."""

    forecast: LengthForecast  # its length, given that it lasted at least until the day
    length: int  # days from its start to the next start
    days_late: int | None  # the day − the beginning-of-cycle estimate, when past it

    @property
    def earliest(self) -> int:
        return self.forecast.interval[0]

    @property
    def latest(self) -> int:
        return self.forecast.interval[1]


@dataclasses.dataclass(frozen=True)
class PeriodSpan:
    start: dt.date
    end: dt.date | None  # None while she has not logged it
    excluded: bool = False  # the cycle it starts is set aside: its length counts nowhere


@dataclasses.dataclass(frozen=True)
class CycleDay:
    """Where a date falls in her cycle."""

    day_of_cycle: int
    phase: str
    cycle_length: int  # the cycle's real length once it is over, else the estimate
    start: dt.date | None  # the cycle's first day, recorded or projected; None if unknown

    @property
    def days_until_next_period(self) -> int:
        return self.cycle_length - self.day_of_cycle + 1


@dataclasses.dataclass(frozen=True)
class CycleCalendar:
    """A user's cycles as her periods and profile describe them now."""

    periods: tuple[PeriodSpan, ...]  # oldest first
    estimate: LengthForecast  # her next cycle's length, from hers and everyone's cycles
    luteal_length: int  # her profile's (or the default): where ovulation is not detected
    menses_length: int
    profile: Mapping[str, Any] | None = None
    ovulations: Mapping[dt.date, Ovulation] = dataclasses.field(default_factory=dict)
    luteal_estimate: LutealEstimate | None = None  # from her detected ovulations
    population: CyclePopulation = dataclasses.field(default=BUILT_IN_POPULATION, compare=False)
    seen: dict[dt.date, SeenOnDay] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def build(
        cls,
        periods: Iterable[PeriodSpan],
        profile: Mapping[str, Any] | None = None,
        signs: Iterable[FertilitySign] = (),
        population: CyclePopulation = BUILT_IN_POPULATION,
    ):
        """Her calendar; her cycles (less those set aside) and the cycle_length of her
        profile, if any, weighed against `population` (everyone's cycles)."""
        known = profile or {}
        ordered = tuple(sorted(periods, key=lambda period: period.start))
        starts = [period.start for period in ordered]
        set_aside = frozenset(period.start for period in ordered if period.excluded)
        luteal_length = known.get("luteal_length", DEFAULT_LUTEAL_LENGTH)
        ovulations = ovulations_by_cycle(starts, sorted(signs, key=lambda sign: sign.date))
        return cls(
            periods=ordered,
            estimate=population.forecast(
                cycle_lengths(starts, set_aside), known.get("cycle_length")
            ),
            luteal_length=luteal_length,
            menses_length=known.get("menses_length", DEFAULT_MENSES_LENGTH),
            profile=profile,
            ovulations=ovulations,
            luteal_estimate=estimate_luteal_length(
                luteal_lengths(starts, ovulations, set_aside), luteal_length, POPULATION_LUTEAL_SD
            ),
            population=population,
        )

    @functools.cached_property
    def open_cycle(self) -> OpenCycle:
        """Her latest cycle: of the estimated length, unless her observations show its
        ovulation, which puts the next start her luteal phase (and a day) after it."""
        estimated = OpenCycle(self.estimate, self.luteal_length, None)
        ovulation = self.ovulations.get(self.periods[-1].start) if self.periods else None
        if ovulation is None or self.luteal_estimate is None:
            return estimated
        luteal = self.luteal_estimate
        to_ovulation = (ovulation.date - self.periods[-1].start).days
        if not CYCLE_MIN_DAYS <= to_ovulation + luteal.length + 1 <= CYCLE_MAX_DAYS:
            return estimated  # signs that no cycle can have: trust the estimate
        forecast = LengthForecast.normal(
            to_ovulation + luteal.days + 1,
            luteal.predictive_spread,
            CYCLE_MIN_DAYS,
            CYCLE_MAX_DAYS,
        )
        return OpenCycle(forecast, luteal.length, ovulation)

    def open_cycle_seen_on(self, day: dt.date) -> SeenOnDay:
        """Her open cycle seen on `day` (no period logged since its start): its range no
        earlier than `day`, and, once `day` is past its estimated start, its length from
        what her own and everyone's cycles say about a cycle already that long.
        `days_late` counts from the estimate made at the beginning of the cycle, from her
        cycles alone (her observations may have moved the start since)."""
        if day not in self.seen:
            expected = self.open_cycle.forecast
            elapsed = (day - self.periods[-1].start).days
            given_elapsed = expected.at_least(elapsed)
            late_by = elapsed - self.estimate.median
            self.seen[day] = SeenOnDay(
                forecast=given_elapsed,
                length=given_elapsed.median if elapsed > expected.median else expected.median,
                days_late=late_by if late_by > 0 else None,
            )
        return self.seen[day]

    def _index_on_or_before(self, date: dt.date) -> int | None:
        index = bisect.bisect_right([period.start for period in self.periods], date) - 1
        return index if index >= 0 else None

    def cycle_length_from(self, start: dt.date) -> int | None:
        """Days from the period starting on `start` to the next recorded start."""
        later = [period.start for period in self.periods if period.start > start]
        return (min(later) - start).days if later else None

    def effective_end(self, period: PeriodSpan) -> dt.date:
        """Its logged end, else menses_length days from its start."""
        return period.end or period.start + dt.timedelta(days=self.menses_length - 1)

    @property
    def late_after_day(self) -> int:
        return self.open_cycle.latest

    def luteal_length_of(self, start: dt.date, length: int) -> int:
        """The luteal phase of the cycle from `start` lasting `length` days: what places
        its ovulation (day `length − luteal`), detected or from her profile."""
        ovulation = self.ovulations.get(start)
        return (
            self.luteal_length if ovulation is None else length - (ovulation.date - start).days - 1
        )

    def cycle_day(self, date: dt.date, today: dt.date | None = None) -> CycleDay | None:
        """Day of cycle and phase on `date`, or None when her periods do not cover it (no
        start before it, or more than CYCLE_MAX_DAYS since the last one).

        Past dates use the recorded periods. Dates after `today` (when given) are projected:
        cycles of the estimated length follow her latest period, unless she is already late
        today, in which case nobody can say when the next one comes and she stays late.
        """
        index = self._index_on_or_before(date)
        if index is None:
            return None
        period = self.periods[index]
        length = self.cycle_length_from(period.start)
        if length is not None and length <= CYCLE_MAX_DAYS:
            # A completed cycle: its real length places ovulation; it cannot be late.
            day = (date - period.start).days + 1
            bleeding_days = (self.effective_end(period) - period.start).days + 1
            luteal = self.luteal_length_of(period.start, length)
            return CycleDay(
                day, phase_on_day(day, length, bleeding_days, luteal), length, period.start
            )
        start, bleeding_days = period.start, (self.effective_end(period) - period.start).days + 1
        open_cycle, estimated = self.open_cycle, self.estimate.median
        length = open_cycle.length
        if period == self.periods[-1]:  # her open cycle, as seen on today (or on the date)
            length = self.open_cycle_seen_on(date if today is None else today).length
        if (
            today is not None
            and date > today
            and (today - start).days < self.late_after_day
            and (date - start).days >= length
        ):
            # Past her open cycle: projected cycles of the estimated length follow it.
            later_days = (date - start).days - length
            start += dt.timedelta(days=length + later_days // estimated * estimated)
            day = (date - start).days + 1
            phase = phase_on_day(day, estimated, self.menses_length, self.luteal_length)
            return CycleDay(day, phase, estimated, start)
        day = (date - start).days + 1
        if day > CYCLE_MAX_DAYS:
            return None
        phase = phase_on_day(
            day, open_cycle.length, bleeding_days, open_cycle.luteal_length, self.late_after_day
        )
        return CycleDay(day, phase, length, start)

    def phase_on_estimated_cycle_day(self, day_of_cycle: int) -> str:
        """The phase on a day of a cycle her periods do not place: one of the estimate."""
        return phase_on_day(
            day_of_cycle,
            self.estimate.median,
            self.menses_length,
            self.luteal_length,
            self.estimate.interval[1],
        )

    def overlapping(self, candidate: PeriodSpan, ignore_start: dt.date | None = None):
        """The first recorded period that overlaps `candidate`, if any."""
        candidate_end = self.effective_end(candidate)
        for period in self.periods:
            if period.start == ignore_start:
                continue
            if period.start <= candidate_end and candidate.start <= self.effective_end(period):
                return period
        return None

    def outlook(self, date: dt.date, today: dt.date | None = None) -> dict[str, Any]:
        """The contract's `cycle` block, seen from `date` (projected past `today`; her
        open cycle as seen on `today`, or on `date` when no today is given)."""
        length = self.estimate.median
        cycle = self.cycle_day(date, today)
        if cycle is None:
            index = self._index_on_or_before(date)
            return {
                "length_estimate": length,
                "last_period_start": None if index is None else self.periods[index].start,
                "next_period_start": None,
                "next_period_range": None,
                "days_until_next_period": None,
                "fertile_window": None,
                "ovulation": None,
                "days_late": None,
            }
        last_start = cycle.start
        next_start = last_start + dt.timedelta(days=cycle.cycle_length)
        open_cycle = self.open_cycle
        in_open_cycle = bool(self.periods) and last_start == self.periods[-1].start
        if in_open_cycle:
            seen = self.open_cycle_seen_on(date if today is None else today)
            earliest, latest, days_late = seen.earliest, seen.latest, seen.days_late
        else:  # a cycle over, or projected: the range of the estimate, placed around it
            low, high = self.estimate.interval
            earliest = cycle.cycle_length - (length - low)
            latest = cycle.cycle_length + (high - length)
            days_late = None
        detected = open_cycle.ovulation if in_open_cycle else self.ovulations.get(last_start)
        if detected is not None:
            ovulation = detected
        else:
            # Day d of the cycle is start + d − 1; ovulation is day `length − luteal_length`.
            luteal = self.luteal_length
            estimated = last_start + dt.timedelta(days=cycle.cycle_length - luteal - 1)
            ovulation = Ovulation(estimated, "estimated")
        return {
            "length_estimate": length,
            "last_period_start": last_start,
            "next_period_start": next_start,
            "next_period_range": [
                last_start + dt.timedelta(days=earliest),
                last_start + dt.timedelta(days=latest),
            ],
            "days_until_next_period": (next_start - date).days,
            "fertile_window": [
                ovulation.date - dt.timedelta(days=FERTILE_DAYS_BEFORE_OVULATION),
                ovulation.date + dt.timedelta(days=FERTILE_DAYS_AFTER_OVULATION),
            ],
            "ovulation": {"date": ovulation.date, "evidence": ovulation.evidence},
            "days_late": days_late,
        }
