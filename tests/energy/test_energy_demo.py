"""The demo generator."""

import pytest

from conftest import D
from planher.cycles.lengths import (
    cycle_lengths,
)
from planher.energy.demo import bayes_rate, generate_demo_history


def test_the_demo_generator_is_realistic_and_its_bayes_rate_is_known():
    periods, moods = generate_demo_history(180, D, seed=3)
    assert len(moods) == 180 and moods[-1][0] == D
    gaps = cycle_lengths(period.start for period in periods)
    assert all(26 <= gap <= 32 for gap in gaps)
    assert all(4 <= (p.end - p.start).days + 1 <= 6 for p in periods[:-1])
    assert bayes_rate(["ovulatory", "luteal"]) == pytest.approx((0.80 + 0.65) / 2)
