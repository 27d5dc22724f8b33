"""The hierarchical model of cycle length, learned from everyone's cycles (empirical Bayes).

Each woman has a typical length and a spread of her own; her cycles are her typical length
give or take her spread, except now and then an irregular one (a cycle that runs long, an
early bleed, a period she did not log) drawn far wider. How typical lengths and spreads
vary between women, how often a cycle is irregular and how it strays: the population's
distribution of all of that is learned from the women in the service's database, starting
from a built-in one for a new service, with nothing tuned to one data set.

Her forecast is the posterior predictive: her few cycles weighed against the population's
grid of (typical, spread), averaged over what her cycles leave possible. One 40-day cycle
among women who run 28 ± 1 is most likely an irregular one, and moves her little; ten
35-day cycles outweigh any population.

Anchor: Li et al., "A predictive model for next cycle start date that accounts for
adherence in menstrual self-tracking", JAMIA 2021 (arXiv 2102.12439).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.special import logsumexp, ndtr

from planher.config import (
    BUILT_IN_IRREGULAR_SD_DAYS,
    BUILT_IN_IRREGULAR_SHARE,
    BUILT_IN_IRREGULAR_SHIFT_DAYS,
    BUILT_IN_SPREAD_DAYS,
    BUILT_IN_SPREAD_LOG_SD,
    BUILT_IN_TYPICAL_LENGTH_DAYS,
    BUILT_IN_TYPICAL_LENGTH_SD_DAYS,
    BUILT_IN_WEIGHT_WOMEN,
    CYCLE_MAX_DAYS,
    CYCLE_MIN_DAYS,
    POPULATION_FIT_ITERATIONS,
    POPULATION_FIT_MAX_WOMEN,
    RECENCY_HALF_LIFE_CHOICES,
    SPREAD_GRID_DAYS,
    TYPICAL_LENGTH_GRID_DAYS,
)
from planher.cycles.length_forecast import LengthForecast

LENGTHS = np.arange(CYCLE_MIN_DAYS, CYCLE_MAX_DAYS + 1)
TYPICAL_LENGTHS = np.arange(
    TYPICAL_LENGTH_GRID_DAYS[0], TYPICAL_LENGTH_GRID_DAYS[1] + 1e-9, TYPICAL_LENGTH_GRID_DAYS[2]
)
SPREADS = np.geomspace(SPREAD_GRID_DAYS[0], SPREAD_GRID_DAYS[1], SPREAD_GRID_DAYS[2])
# Every (typical length, spread) a woman may have, as two aligned columns.
GRID_TYPICAL = np.repeat(TYPICAL_LENGTHS, len(SPREADS))
GRID_SPREAD = np.tile(SPREADS, len(TYPICAL_LENGTHS))
# Walk-forward forecasts scored at once when the recency half-life is chosen.
SCORING_CHUNK_FORECASTS = 4_096
# Forecasts kept per population: a woman's home screen asks for hers again and again.
FORECASTS_KEPT = 4_096


def rounded_normals(centres: np.ndarray, sds: np.ndarray) -> np.ndarray:
    """P(length) over LENGTHS for each (centre, sd): rows of normals rounded to days,
    renormalised within the lengths that count as one cycle."""
    edges = np.arange(CYCLE_MIN_DAYS, CYCLE_MAX_DAYS + 2) - 0.5
    cumulative = ndtr((edges[None, :] - centres[:, None]) / sds[:, None])
    mass = np.diff(cumulative, axis=1) + 1e-12  # no length is impossible
    return mass / mass.sum(axis=1, keepdims=True)


# P(length | typical, spread) of a regular cycle, at each grid point: the same for every
# population.
REGULAR = rounded_normals(GRID_TYPICAL, GRID_SPREAD)


@dataclasses.dataclass(frozen=True, eq=False)
class CyclePopulation:
    """The population's distribution of women (grid weights over typical length × spread)
    and of irregular cycles, and how fast a woman's older cycles lose weight."""

    weights: np.ndarray  # over the grid, summing to 1
    irregular_share: float  # of all cycles
    irregular_shift_days: float  # an irregular cycle's mean distance from her typical length
    irregular_sd_days: float
    recency_half_life_cycles: float | None  # None: her cycles weigh alike however old
    n_women: int  # whose cycles it was learned from; 0 for the built-in one

    @functools.cached_property
    def irregular(self) -> np.ndarray:
        return rounded_normals(
            GRID_TYPICAL + self.irregular_shift_days,
            np.full_like(GRID_TYPICAL, self.irregular_sd_days),
        )

    @functools.cached_property
    def likelihood(self) -> np.ndarray:
        """P(a cycle's length | the woman is at this grid point): grid × LENGTHS."""
        return (1 - self.irregular_share) * REGULAR + self.irregular_share * self.irregular

    @functools.cached_property
    def log_likelihood(self) -> np.ndarray:
        return np.log(self.likelihood)

    @functools.cached_property
    def log_weights(self) -> np.ndarray:
        return np.log(self.weights + 1e-300)

    @functools.cached_property
    def typical_length(self) -> float:
        """The median woman's typical length: how the population is described in the log."""
        order = np.argsort(GRID_TYPICAL, kind="stable")
        index = np.searchsorted(np.cumsum(self.weights[order]), 0.5)
        return float(GRID_TYPICAL[order][min(index, len(order) - 1)])

    def recency_weights(self, n_cycles: int) -> np.ndarray:
        """Her latest cycle weighs 1, each older one less (a likelihood tempered by age)."""
        return self.age_weights(np.arange(n_cycles - 1, -1, -1))

    def age_weights(self, age: np.ndarray) -> np.ndarray:
        """What a cycle `age` cycles older than her latest weighs."""
        if self.recency_half_life_cycles is None:
            return np.ones(age.shape)
        return 0.5 ** (age / self.recency_half_life_cycles)

    def forecast(self, lengths: Sequence[int], stated_length: int | None = None) -> LengthForecast:
        """Her next cycle's length from her cycles (oldest first). When she stated her
        typical length (her profile), the population's typical lengths are moved to centre
        on it: what she says places her, how women vary around what they say is everyone's,
        and with no cycle logged the forecast is hers."""
        return self.kept_forecasts(tuple(lengths), stated_length)

    @functools.cached_property
    def kept_forecasts(self):
        return functools.lru_cache(maxsize=FORECASTS_KEPT)(self.computed_forecast)

    def computed_forecast(
        self, lengths: tuple[int, ...], stated_length: int | None
    ) -> LengthForecast:
        columns = [length - CYCLE_MIN_DAYS for length in lengths]
        log_weights = self.log_weights if stated_length is None else self.centred_on(stated_length)
        log_posterior = log_weights + self.log_likelihood[:, columns] @ self.recency_weights(
            len(lengths)
        )
        posterior = np.exp(log_posterior - log_posterior.max())
        return LengthForecast(CYCLE_MIN_DAYS, posterior @ self.likelihood / posterior.sum())

    def centred_on(self, typical_length: float) -> np.ndarray:
        """The log grid weights moved along typical length so that their median is
        `typical_length` (as near as the grid allows)."""
        steps = round((typical_length - self.typical_length) / TYPICAL_LENGTH_GRID_DAYS[2])
        by_typical = self.weights.reshape(len(TYPICAL_LENGTHS), len(SPREADS))
        steps = int(np.clip(steps, 1 - len(TYPICAL_LENGTHS), len(TYPICAL_LENGTHS) - 1))
        moved = np.zeros_like(by_typical)
        if steps >= 0:
            moved[steps:] = by_typical[: len(by_typical) - steps]
        else:
            moved[:steps] = by_typical[-steps:]
        if moved.sum() <= 0:  # all of it moved off the grid: her length, at the edge
            moved[0 if steps < 0 else -1] = by_typical.sum(axis=0)
        return np.log(moved.reshape(-1) / moved.sum() + 1e-300)

    def posterior(self, counts: np.ndarray) -> np.ndarray:
        """P(grid point | cycles) for each row of (weighted) counts per length."""
        log_posterior = counts @ self.log_likelihood.T + self.log_weights
        return np.exp(log_posterior - logsumexp(log_posterior, axis=1, keepdims=True))

    def predictive(self, counts: np.ndarray) -> np.ndarray:
        return self.posterior(counts) @ self.likelihood


def built_in_population() -> CyclePopulation:
    """What a new service assumes before anyone has logged: typical lengths around 29 days
    (± 3 between women), spreads around 2 days, one cycle in ten irregular and running long.
    Broad on purpose: the population's own cycles replace it as they come."""
    log_spread = np.log(GRID_SPREAD)
    density = np.exp(
        -0.5
        * ((GRID_TYPICAL - BUILT_IN_TYPICAL_LENGTH_DAYS) / BUILT_IN_TYPICAL_LENGTH_SD_DAYS) ** 2
        - 0.5 * ((log_spread - math.log(BUILT_IN_SPREAD_DAYS)) / BUILT_IN_SPREAD_LOG_SD) ** 2
    )
    return CyclePopulation(
        weights=density / density.sum(),
        irregular_share=BUILT_IN_IRREGULAR_SHARE,
        irregular_shift_days=BUILT_IN_IRREGULAR_SHIFT_DAYS,
        irregular_sd_days=BUILT_IN_IRREGULAR_SD_DAYS,
        recency_half_life_cycles=None,
        n_women=0,
    )


BUILT_IN_POPULATION = built_in_population()


def length_counts(lengths_by_woman: Iterable[Sequence[int]]) -> np.ndarray:
    """One row per woman with a cycle: how many of her cycles had each length."""
    rows = [
        np.bincount(np.asarray(lengths, dtype=int) - CYCLE_MIN_DAYS, minlength=len(LENGTHS))
        for lengths in lengths_by_woman
        if len(lengths)
    ]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(LENGTHS))


def every_nth(rows: list, at_most: int) -> list:
    """At most `at_most` of `rows`, spread evenly (the same ones every time)."""
    step = max(1, math.ceil(len(rows) / at_most))
    return rows[::step]


def learn_population(
    lengths_by_woman: Iterable[Sequence[int]], start: CyclePopulation = BUILT_IN_POPULATION
) -> CyclePopulation:
    """The population behind these women's cycles (each oldest first): its grid weights and
    irregular cycles by expectation-maximisation, `start` counting as BUILT_IN_WEIGHT_WOMEN
    more women (so that a few women move it a little and thousands decide it), then the
    recency half-life under which their own cycles, walked forward, were best foreseen."""
    women = every_nth(
        [list(lengths) for lengths in lengths_by_woman if len(lengths)], POPULATION_FIT_MAX_WOMEN
    )
    if not women:
        return start
    counts = length_counts(women)
    n_women, n_cycles = counts.shape[0], counts.sum()
    pseudo_cycles = BUILT_IN_WEIGHT_WOMEN * n_cycles / n_women
    distance = LENGTHS[None, :] - GRID_TYPICAL[:, None]
    population = start
    for _ in range(POPULATION_FIT_ITERATIONS):
        responsibilities = population.posterior(counts)  # women × grid
        expected = responsibilities.T @ counts  # cycles of each length at each grid point
        irregular = (
            expected * population.irregular_share * population.irregular / population.likelihood
        )
        irregular_cycles = irregular.sum()
        shift = ((irregular * distance).sum() + pseudo_cycles * start.irregular_shift_days) / (
            irregular_cycles + pseudo_cycles
        )
        second_moment = (
            (irregular * distance**2).sum()
            + pseudo_cycles * (start.irregular_sd_days**2 + start.irregular_shift_days**2)
        ) / (irregular_cycles + pseudo_cycles)
        population = CyclePopulation(
            weights=(responsibilities.sum(axis=0) + BUILT_IN_WEIGHT_WOMEN * start.weights)
            / (n_women + BUILT_IN_WEIGHT_WOMEN),
            irregular_share=(irregular_cycles + pseudo_cycles * start.irregular_share)
            / (n_cycles + pseudo_cycles),
            irregular_shift_days=shift,
            irregular_sd_days=math.sqrt(max(second_moment - shift**2, 1.0)),
            recency_half_life_cycles=None,
            n_women=n_women,
        )
    return max(
        (
            dataclasses.replace(population, recency_half_life_cycles=half_life)
            for half_life in RECENCY_HALF_LIFE_CHOICES
        ),
        key=lambda candidate: walk_forward_log_likelihood(candidate, women),
    )


def walk_forward_log_likelihood(
    population: CyclePopulation, women: Sequence[Sequence[int]]
) -> float:
    """How probable each woman's every cycle after her first was, foreseen from the cycles
    before it: the score by which the recency half-life is chosen."""
    prefixes, actual = [], []
    for lengths in women:
        if len(lengths) < 2:
            continue
        columns = np.asarray(lengths) - CYCLE_MIN_DAYS
        one_hot = np.zeros((len(lengths), len(LENGTHS)))
        one_hot[np.arange(len(lengths)), columns] = 1.0
        # Row k weighs her cycles before cycle k + 1 as a forecast made then would.
        age = np.arange(len(lengths) - 1)[:, None] - np.arange(len(lengths))[None, :]
        weights = np.where(age >= 0, population.age_weights(np.maximum(age, 0)), 0.0)
        prefixes.append(weights @ one_hot)
        actual.append(columns[1:])
    if not prefixes:  # no one has two cycles yet: every half-life is as good
        return 0.0
    counts, targets = np.concatenate(prefixes), np.concatenate(actual)
    total = 0.0
    for first in range(0, len(counts), SCORING_CHUNK_FORECASTS):
        chunk = slice(first, first + SCORING_CHUNK_FORECASTS)
        foreseen = population.predictive(counts[chunk])
        total += float(np.log(foreseen[np.arange(len(foreseen)), targets[chunk]]).sum())
    return total
