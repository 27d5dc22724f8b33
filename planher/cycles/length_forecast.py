"""A forecast of how many days a cycle lasts: a probability for each whole number of days."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy.special import ndtr

from planher.config import RANGE_COVERAGE


@dataclasses.dataclass(frozen=True, eq=False)
class LengthForecast:
    """P(length = shortest + i) = probabilities[i]. The point estimate is the median (it
    minimises the expected absolute error in days); the range is the shortest run of days
    that holds RANGE_COVERAGE of the probability."""

    shortest: int
    probabilities: np.ndarray

    @classmethod
    def normal(cls, centre: float, sd: float, shortest: int, longest: int) -> LengthForecast:
        """A normal distribution rounded to whole days between `shortest` and `longest`."""
        edges = np.arange(shortest, longest + 2) - 0.5
        mass = np.diff(ndtr((edges - centre) / sd))
        if mass.sum() <= 0:  # all of it outside: the nearest day
            mass = np.zeros(len(edges) - 1)
            mass[int(np.clip(round(centre), shortest, longest)) - shortest] = 1.0
        return cls(shortest, mass / mass.sum())

    @functools.cached_property
    def median(self) -> int:
        index = int(np.searchsorted(np.cumsum(self.probabilities), 0.5))
        return self.shortest + min(index, len(self.probabilities) - 1)

    @functools.cached_property
    def interval(self) -> tuple[int, int]:
        """The shortest (then most probable) run of days holding RANGE_COVERAGE of it."""
        running = np.concatenate(([0.0], np.cumsum(self.probabilities)))
        total = running[-1]
        # the first end at which each start has gathered enough
        ends = np.searchsorted(running, running[:-1] + RANGE_COVERAGE * total - 1e-12)
        starts = np.flatnonzero(ends < len(running))
        if len(starts) == 0:
            return self.shortest, self.shortest + len(self.probabilities) - 1
        widths = ends[starts] - starts
        narrowest = starts[widths == widths.min()]
        held = running[ends[narrowest]] - running[narrowest]
        first = int(narrowest[np.argmax(held)])
        last = int(ends[first]) - 1
        return self.shortest + first, self.shortest + last

    def at_least(self, days: int) -> LengthForecast:
        """The same forecast once the cycle is known to last `days` or more."""
        offset = max(0, days - self.shortest)
        rest = self.probabilities[offset:]
        if offset >= len(self.probabilities) or rest.sum() <= 0:
            return LengthForecast(days, np.ones(1))
        return LengthForecast(self.shortest + offset, rest / rest.sum())

    def then(self, following: LengthForecast) -> LengthForecast:
        """Days to the end of the cycle after this one: the two lengths added."""
        return LengthForecast(
            self.shortest + following.shortest,
            np.convolve(self.probabilities, following.probabilities),
        )
