"""What a model sees of a day: its place in her cycle and, if she shares one, her profile."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from planher.body_mass import bmi
from planher.config import (
    DEFAULT_CYCLE_LENGTH,
    DEFAULT_LUTEAL_LENGTH,
    DEFAULT_MENSES_LENGTH,
    DEFAULT_NUMBER_OF_PEAK,
)
from planher.cycles.calendar import PHASES, CycleCalendar, CycleDay

TYPICAL_BMI = 22.0


def mood_cycle_day(
    calendar: CycleCalendar, date: dt.date, given_day: int | None
) -> CycleDay | None:
    """Where a mood's date falls: from her periods when they cover it, else from the day of
    cycle she gave (in a cycle of the estimated length), else unknown."""
    cycle = calendar.cycle_day(date)
    if cycle is not None or given_day is None:
        return cycle
    return CycleDay(
        given_day, calendar.phase_on_estimated_cycle_day(given_day), calendar.estimate.median, None
    )


def cycle_features(cycle: CycleDay) -> list[float]:
    """Day of cycle, its place in the cycle as an angle (so day 28 sits next to day 1),
    days until the next period, and the phase one-hot."""
    angle = 2 * math.pi * (cycle.day_of_cycle - 1) / cycle.cycle_length
    return [
        float(cycle.day_of_cycle),
        math.sin(angle),
        math.cos(angle),
        float(cycle.days_until_next_period),
        *(float(cycle.phase == phase) for phase in PHASES),
    ]


def profile_features(profile: Mapping[str, Any] | None) -> list[float]:
    """What sets one woman apart from another: only the population model uses these. A
    woman without a profile gets the defaults (and a typical BMI), flagged as such."""
    if profile is None:
        return [
            0.0,
            TYPICAL_BMI,
            DEFAULT_CYCLE_LENGTH,
            DEFAULT_LUTEAL_LENGTH,
            DEFAULT_MENSES_LENGTH,
            0.0,
            DEFAULT_NUMBER_OF_PEAK,
        ]
    return [
        1.0,
        bmi(profile["height_cm"], profile["weight_kg"]),
        float(profile["cycle_length"]),
        float(profile["luteal_length"]),
        float(profile["menses_length"]),
        float(profile["unusual_bleeding"]),
        float(profile["number_of_peak"]),
    ]


def energy_features(cycle: CycleDay, profile: Mapping | None, with_profile: bool) -> list[float]:
    return cycle_features(cycle) + (profile_features(profile) if with_profile else [])
