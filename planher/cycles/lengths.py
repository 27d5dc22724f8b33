"""Her typical cycle length: a robust, recency-weighted estimate shrunk toward a prior."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import statistics
from collections.abc import Collection, Iterable, Sequence

from planher.config import (
    CYCLE_MAX_DAYS,
    CYCLE_MIN_DAYS,
    DEFAULT_CYCLE_LENGTH,
    HUBER_THRESHOLD_DAYS,
    POPULATION_CYCLE_SD,
    POPULATION_PRIOR_MIN_CYCLES,
    POPULATION_PRIOR_MIN_WOMEN,
    PRIOR_WEIGHT_CYCLES,
    RANGE_Z,
    RECENCY_HALF_LIFE_CYCLES,
    SPREAD_PRIOR_WEIGHT_CYCLES,
)


def cycle_lengths(
    period_starts: Iterable[dt.date], set_aside: Collection[dt.date] = frozenset()
) -> list[int]:
    """The lengths of her cycles: gaps between consecutive starts that can be one cycle,
    less the cycles she set aside (those that start on a date of `set_aside`)."""
    starts = sorted(period_starts)
    gaps = [
        (later - earlier).days
        for earlier, later in itertools.pairwise(starts)
        if earlier not in set_aside
    ]
    return [gap for gap in gaps if CYCLE_MIN_DAYS <= gap <= CYCLE_MAX_DAYS]


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    half, running = sum(weights) / 2, 0.0
    for value, weight in pairs:
        running += weight
        if running >= half:
            return value
    return pairs[-1][0]


def huber_mean(values: Sequence[float], weights: Sequence[float]) -> tuple[float, float]:
    """A weighted mean in which values more than HUBER_THRESHOLD_DAYS from the centre count
    less (in proportion), so one 45-day cycle does not drag a 28-day woman's estimate.
    Returns the mean and the total weight it rests on."""
    centre = weighted_median(values, weights)
    for _ in range(10):
        robust_weights = [
            weight * min(1.0, HUBER_THRESHOLD_DAYS / max(abs(value - centre), 1e-9))
            for value, weight in zip(values, weights, strict=True)
        ]
        centre = sum(v * w for v, w in zip(values, robust_weights, strict=True)) / sum(
            robust_weights
        )
    return centre, sum(robust_weights)


@dataclasses.dataclass(frozen=True)
class CycleLengthEstimate:
    days: float  # expected length of her next cycle
    spread: float  # its standard deviation, in days
    n_cycles: int  # how many of her own cycles it rests on

    @property
    def length(self) -> int:
        return round(self.days)

    @property
    def range_days(self) -> int:
        """Half the width of the predicted range around the next start (80% coverage)."""
        return max(1, round(RANGE_Z * self.spread))


def estimate_cycle_length(
    lengths: Sequence[int], prior_length: float, prior_spread: float = POPULATION_CYCLE_SD
) -> CycleLengthEstimate:
    """Her next cycle's length from her past cycles (oldest first); the same for her luteal
    phase, from its past lengths and their own prior.

    A robust (Huber), recency-weighted mean of her cycles, shrunk towards `prior_length`
    (her profile's cycle_length, or 28) as if that were one more cycle, so that one or two
    cycles do not decide alone. The spread is her robust standard deviation (scaled median
    absolute deviation), shrunk towards POPULATION_CYCLE_SD in the same way. On FedCycleData
    this beats the mean of her past cycles; tests/test_cycle_evaluation.py measures it.
    """
    n = len(lengths)
    if n == 0:
        return CycleLengthEstimate(float(prior_length), prior_spread, 0)
    recency = [0.5 ** ((n - 1 - index) / RECENCY_HALF_LIFE_CYCLES) for index in range(n)]
    centre, weight = huber_mean(lengths, recency)
    days = (PRIOR_WEIGHT_CYCLES * prior_length + weight * centre) / (PRIOR_WEIGHT_CYCLES + weight)
    median = statistics.median(lengths)
    mad_sd = 1.4826 * statistics.median(abs(length - median) for length in lengths)
    spread = math.sqrt(
        (SPREAD_PRIOR_WEIGHT_CYCLES * prior_spread**2 + (n - 1) * mad_sd**2)
        / (SPREAD_PRIOR_WEIGHT_CYCLES + n - 1)
    )
    return CycleLengthEstimate(days, spread, n)


@dataclasses.dataclass(frozen=True)
class CyclePrior:
    """What a woman's few cycles are shrunk towards when her profile does not say."""

    length: float
    spread: float
    n_women: int  # whose cycles it rests on; 0 for the textbook fallback


TEXTBOOK_CYCLE_PRIOR = CyclePrior(float(DEFAULT_CYCLE_LENGTH), POPULATION_CYCLE_SD, 0)


def population_cycle_prior(lengths_by_woman: Iterable[Sequence[int]]) -> CyclePrior:
    """The cycles of everyone, as a prior for a woman with few: a robust (Huber) mean of
    each woman's median cycle (one vote per woman, however long she has logged), among
    women with at least POPULATION_PRIOR_MIN_CYCLES cycles. The spread stays the textbook
    within-woman one. While fewer than POPULATION_PRIOR_MIN_WOMEN such women exist: 28."""
    typical = [
        float(statistics.median(lengths))
        for lengths in lengths_by_woman
        if len(lengths) >= POPULATION_PRIOR_MIN_CYCLES
    ]
    if len(typical) < POPULATION_PRIOR_MIN_WOMEN:
        return TEXTBOOK_CYCLE_PRIOR
    centre, _ = huber_mean(typical, [1.0] * len(typical))
    return CyclePrior(centre, POPULATION_CYCLE_SD, len(typical))
