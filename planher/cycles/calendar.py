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
from planher.cycles.lengths import (
    TEXTBOOK_CYCLE_PRIOR,
    CycleLengthEstimate,
    CyclePrior,
    cycle_lengths,
    estimate_cycle_length,
)
from planher.cycles.ovulation import FertilitySign, Ovulation, luteal_lengths, ovulations_by_cycle

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
    """Her latest cycle, not over yet: its expected length and range, its luteal phase, and
    the ovulation her observations show, if they do."""

    length: int
    range_days: int
    luteal_length: int
    ovulation: Ovulation | None


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
    estimate: CycleLengthEstimate
    luteal_length: int  # her profile's (or the default): where ovulation is not detected
    menses_length: int
    profile: Mapping[str, Any] | None = None
    ovulations: Mapping[dt.date, Ovulation] = dataclasses.field(default_factory=dict)
    luteal_estimate: CycleLengthEstimate | None = None  # from her detected ovulations
    prior: CyclePrior = TEXTBOOK_CYCLE_PRIOR

    @classmethod
    def build(
        cls,
        periods: Iterable[PeriodSpan],
        profile: Mapping[str, Any] | None = None,
        signs: Iterable[FertilitySign] = (),
        prior: CyclePrior = TEXTBOOK_CYCLE_PRIOR,
    ):
        """Her calendar; her cycles are shrunk towards her profile's cycle_length, else
        towards `prior` (everyone's cycles)."""
        known = profile or {}
        ordered = tuple(sorted(periods, key=lambda period: period.start))
        starts = [period.start for period in ordered]
        set_aside = frozenset(period.start for period in ordered if period.excluded)
        luteal_length = known.get("luteal_length", DEFAULT_LUTEAL_LENGTH)
        ovulations = ovulations_by_cycle(starts, sorted(signs, key=lambda sign: sign.date))
        return cls(
            periods=ordered,
            estimate=estimate_cycle_length(
                cycle_lengths(starts, set_aside),
                known.get("cycle_length", prior.length),
                prior.spread,
            ),
            luteal_length=luteal_length,
            menses_length=known.get("menses_length", DEFAULT_MENSES_LENGTH),
            profile=profile,
            ovulations=ovulations,
            luteal_estimate=estimate_cycle_length(
                luteal_lengths(starts, ovulations, set_aside), luteal_length, POPULATION_LUTEAL_SD
            ),
            prior=prior,
        )

    @functools.cached_property
    def open_cycle(self) -> OpenCycle:
        """Her latest cycle: of the estimated length, unless her observations show its
        ovulation, which puts the next start her luteal phase (and a day) after it."""
        estimated = OpenCycle(
            self.estimate.length, self.estimate.range_days, self.luteal_length, None
        )
        ovulation = self.ovulations.get(self.periods[-1].start) if self.periods else None
        if ovulation is None or self.luteal_estimate is None:
            return estimated
        luteal = self.luteal_estimate.length
        length = (ovulation.date - self.periods[-1].start).days + luteal + 1
        if not CYCLE_MIN_DAYS <= length <= CYCLE_MAX_DAYS:
            return estimated  # signs that no cycle can have: trust the estimate
        return OpenCycle(length, self.luteal_estimate.range_days, luteal, ovulation)

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
        return self.open_cycle.length + self.open_cycle.range_days

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
        open_cycle, estimated = self.open_cycle, self.estimate.length
        if (
            today is not None
            and date > today
            and (today - start).days < self.late_after_day
            and (date - start).days >= open_cycle.length
        ):
            # Past her open cycle: projected cycles of the estimated length follow it.
            later_days = (date - start).days - open_cycle.length
            start += dt.timedelta(days=open_cycle.length + later_days // estimated * estimated)
            day = (date - start).days + 1
            phase = phase_on_day(day, estimated, self.menses_length, self.luteal_length)
            return CycleDay(day, phase, estimated, start)
        day = (date - start).days + 1
        if day > CYCLE_MAX_DAYS:
            return None
        phase = phase_on_day(
            day, open_cycle.length, bleeding_days, open_cycle.luteal_length, self.late_after_day
        )
        return CycleDay(day, phase, open_cycle.length, start)

    def phase_on_estimated_cycle_day(self, day_of_cycle: int) -> str:
        """The phase on a day of a cycle her periods do not place: one of the estimate."""
        return phase_on_day(
            day_of_cycle,
            self.estimate.length,
            self.menses_length,
            self.luteal_length,
            self.estimate.length + self.estimate.range_days,
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
        """The contract's `cycle` block, seen from `date` (projected past `today`)."""
        length = self.estimate.length
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
            }
        last_start = cycle.start
        next_start = last_start + dt.timedelta(days=cycle.cycle_length)
        open_cycle = self.open_cycle
        in_open_cycle = bool(self.periods) and last_start == self.periods[-1].start
        range_days = open_cycle.range_days if in_open_cycle else self.estimate.range_days
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
                next_start - dt.timedelta(days=range_days),
                next_start + dt.timedelta(days=range_days),
            ],
            "days_until_next_period": (next_start - date).days,
            "fertile_window": [
                ovulation.date - dt.timedelta(days=FERTILE_DAYS_BEFORE_OVULATION),
                ovulation.date + dt.timedelta(days=FERTILE_DAYS_AFTER_OVULATION),
            ],
            "ovulation": {"date": ovulation.date, "evidence": ovulation.evidence},
        }
