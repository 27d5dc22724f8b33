"""Ovulation from her observations: an LH surge, a temperature shift, or the mucus peak."""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import itertools
from collections.abc import Collection, Mapping, Sequence

from planher.config import (
    BBT_SHIFT_CELSIUS,
    BBT_SHIFT_HIGH_READINGS,
    BBT_SHIFT_LOW_READINGS,
    CYCLE_MAX_DAYS,
    CYCLE_MIN_DAYS,
    LUTEAL_MAX_DAYS,
    LUTEAL_MIN_DAYS,
)


@dataclasses.dataclass(frozen=True)
class FertilitySign:
    """One day's observation: what places ovulation."""

    date: dt.date
    lh_test: str | None = None
    bbt_celsius: float | None = None
    cervical_mucus: str | None = None


@dataclasses.dataclass(frozen=True)
class Ovulation:
    date: dt.date
    evidence: str  # lh | bbt | mucus | estimated


MUCUS_FERTILITY = {"dry": 0, "sticky": 1, "creamy": 2, "watery": 3, "egg_white": 4}
FERTILE_MUCUS_RANK = MUCUS_FERTILITY["watery"]


def ovulation_from_lh(signs: Sequence[FertilitySign]) -> dt.date | None:
    """The LH surge comes a day or so before ovulation: the day after her first positive."""
    positive = [sign.date for sign in signs if sign.lh_test == "positive"]
    return positive[0] + dt.timedelta(days=1) if positive else None


def ovulation_from_bbt(signs: Sequence[FertilitySign]) -> dt.date | None:
    """The classic temperature shift: three readings in a row above the six before them,
    the third at least BBT_SHIFT_CELSIUS above the highest of the six. Ovulation is the day
    before the first high reading."""
    readings = [(sign.date, sign.bbt_celsius) for sign in signs if sign.bbt_celsius is not None]
    low, high = BBT_SHIFT_LOW_READINGS, BBT_SHIFT_HIGH_READINGS
    for first in range(low, len(readings) - high + 1):
        cover = max(celsius for _, celsius in readings[first - low : first])
        shift = [celsius for _, celsius in readings[first : first + high]]
        if min(shift) > cover and shift[-1] >= cover + BBT_SHIFT_CELSIUS - 1e-9:
            return readings[first][0] - dt.timedelta(days=1)
    return None


def ovulation_from_mucus(signs: Sequence[FertilitySign]) -> dt.date | None:
    """Her peak day: the last day of her most fertile mucus (watery or egg white), once a
    later day has drier mucus. Ovulation is within a day of it."""
    days = [
        (sign.date, MUCUS_FERTILITY[sign.cervical_mucus]) for sign in signs if sign.cervical_mucus
    ]
    best = max((rank for _, rank in days), default=-1)
    if best < FERTILE_MUCUS_RANK:
        return None
    peaks = [index for index, (_, rank) in enumerate(days) if rank == best]
    first_peak_run_end = peaks[0]
    while first_peak_run_end + 1 < len(days) and days[first_peak_run_end + 1][1] == best:
        first_peak_run_end += 1
    drier_later = any(rank < best for _, rank in days[first_peak_run_end + 1 :])
    return days[first_peak_run_end][0] if drier_later else None


def detect_ovulation(signs: Sequence[FertilitySign]) -> Ovulation | None:
    """Ovulation in one cycle from its signs (oldest first): an LH test if she took one,
    else her temperature shift, else her mucus peak."""
    for evidence, detector in (
        ("lh", ovulation_from_lh),
        ("bbt", ovulation_from_bbt),
        ("mucus", ovulation_from_mucus),
    ):
        if (date := detector(signs)) is not None:
            return Ovulation(date, evidence)
    return None


def ovulations_by_cycle(
    starts: Sequence[dt.date], signs: Sequence[FertilitySign]
) -> dict[dt.date, Ovulation]:
    """The ovulation each cycle's signs show (by the cycle's start; starts and signs oldest
    first): a cycle runs from one start to the day before the next."""
    dates = [sign.date for sign in signs]
    found = {}
    for index, start in enumerate(starts):
        first = bisect.bisect_left(dates, start)
        last = bisect.bisect_left(dates, starts[index + 1]) if index + 1 < len(starts) else None
        if (ovulation := detect_ovulation(signs[first:last])) is not None:
            found[start] = ovulation
    return found


def luteal_lengths(
    starts: Sequence[dt.date],
    ovulations: Mapping[dt.date, Ovulation],
    set_aside: Collection[dt.date] = frozenset(),
) -> list[int]:
    """Her past luteal phases, oldest first: from each detected ovulation to the day before
    the next start, where that makes a luteal phase at all, in cycles she did not set aside."""
    lengths = []
    for start, next_start in itertools.pairwise(starts):
        ovulation = None if start in set_aside else ovulations.get(start)
        if ovulation is not None and CYCLE_MIN_DAYS <= (next_start - start).days <= CYCLE_MAX_DAYS:
            luteal = (next_start - ovulation.date).days - 1
            if LUTEAL_MIN_DAYS <= luteal <= LUTEAL_MAX_DAYS:
                lengths.append(luteal)
    return lengths
