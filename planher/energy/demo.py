"""The demo generator: a woman whose energy follows a known distribution by phase."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping, Sequence

from planher.cycles.calendar import CycleCalendar, PeriodSpan

# The demo generator's true distribution: known, so its best possible accuracy is too.
DEMO_ENERGY_BY_PHASE = {
    "menstrual": (0.75, 0.20, 0.05),
    "follicular": (0.10, 0.30, 0.60),
    "ovulatory": (0.05, 0.15, 0.80),
    "luteal": (0.20, 0.65, 0.15),
    "late": (0.40, 0.50, 0.10),
}
# A woman unlike the phase prior and unlike everyone else: most energy in her period,
# least around ovulation. Her own model has something to learn.
DEMO_CONTRARY_ENERGY_BY_PHASE = {
    "menstrual": (0.05, 0.25, 0.70),
    "follicular": (0.15, 0.60, 0.25),
    "ovulatory": (0.70, 0.20, 0.10),
    "luteal": (0.20, 0.30, 0.50),
    "late": (0.15, 0.35, 0.50),
}


def generate_demo_history(
    days: int,
    today: dt.date,
    seed: int = 0,
    energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE,
):
    """Realistic periods and daily energy for `days` days up to `today`: cycles of 26–32
    days, periods of 4–6, and each day's energy drawn from `energy_by_phase` for the phase
    the service itself computes. Returns (periods, [(date, level)])."""
    rng = random.Random(seed)
    first = today - dt.timedelta(days=days - 1)
    start = first - dt.timedelta(days=rng.randint(0, 20))
    periods = []
    while start <= today:
        periods.append(PeriodSpan(start, min(start + dt.timedelta(days=rng.randint(3, 5)), today)))
        start += dt.timedelta(days=rng.choice((26, 27, 28, 28, 29, 29, 30, 31, 32)))
    calendar = CycleCalendar.build(periods)
    moods = []
    for offset in range(days):
        date = first + dt.timedelta(days=offset)
        phase = calendar.cycle_day(date).phase
        moods.append((date, rng.choices(range(3), weights=energy_by_phase[phase])[0]))
    return periods, moods


def bayes_rate(
    phases: Iterable[str], energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE
) -> float:
    """The best accuracy any model can reach on days drawn from `energy_by_phase`: it knows
    the phase and guesses its most likely level."""
    phases = list(phases)
    return sum(max(energy_by_phase[phase]) for phase in phases) / len(phases)
