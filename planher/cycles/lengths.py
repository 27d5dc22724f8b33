"""Which gaps between period starts are cycles, and her luteal phase's robust estimate."""

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
    HUBER_THRESHOLD_DAYS,
    PRIOR_WEIGHT_CYCLES,
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
    less (in proportion), so one odd luteal phase does not drag her estimate. Returns the
    mean and the total weight it rests on."""
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
class LutealEstimate:
    days: float  # expected length of her next luteal phase
    spread: float  # its standard deviation, in days
    n_cycles: int  # how many of her own detected luteal phases it rests on

    @property
    def length(self) -> int:
        return round(self.days)

    @property
    def predictive_spread(self) -> float:
        """The spread of her next phase: its own, and that of the mean it is drawn around
        (estimated from her phases and the prior, one more)."""
        return self.spread * math.sqrt(1 + 1 / (self.n_cycles + PRIOR_WEIGHT_CYCLES))


def estimate_luteal_length(
    lengths: Sequence[int], prior_length: float, prior_spread: float
) -> LutealEstimate:
    """Her next luteal phase from her past ones (oldest first): a robust (Huber),
    recency-weighted mean shrunk towards `prior_length` (her profile's luteal_length, or
    14) as if that were one more phase; the spread is her robust standard deviation
    (scaled median absolute deviation) shrunk towards `prior_spread` in the same way."""
    n = len(lengths)
    if n == 0:
        return LutealEstimate(float(prior_length), prior_spread, 0)
    recency = [0.5 ** ((n - 1 - index) / RECENCY_HALF_LIFE_CYCLES) for index in range(n)]
    centre, weight = huber_mean(lengths, recency)
    days = (PRIOR_WEIGHT_CYCLES * prior_length + weight * centre) / (PRIOR_WEIGHT_CYCLES + weight)
    median = statistics.median(lengths)
    mad_sd = 1.4826 * statistics.median(abs(length - median) for length in lengths)
    spread = math.sqrt(
        (SPREAD_PRIOR_WEIGHT_CYCLES * prior_spread**2 + (n - 1) * mad_sd**2)
        / (SPREAD_PRIOR_WEIGHT_CYCLES + n - 1)
    )
    return LutealEstimate(days, spread, n)
