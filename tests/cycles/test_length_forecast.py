"""A forecast of a cycle's length in whole days (pure)."""

import numpy as np

from planher.cycles.length_forecast import LengthForecast


def test_the_median_minimises_the_absolute_error_and_the_range_is_the_shortest_80_percent():
    forecast = LengthForecast(26, np.array([0.1, 0.2, 0.4, 0.2, 0.1]))  # 26..30
    assert forecast.median == 28
    assert forecast.interval == (27, 29)  # 0.8 in three days; no two days hold it


def test_a_skewed_forecast_has_a_range_longer_on_its_long_side():
    forecast = LengthForecast.normal(28, 1.0, 15, 90).then(
        LengthForecast(0, np.array([0.8, 0, 0, 0, 0, 0, 0, 0.2]))
    )
    low, high = forecast.interval
    assert forecast.median == 28 and high - 28 > 28 - low


def test_knowing_the_cycle_lasted_some_days_moves_the_forecast_past_them():
    forecast = LengthForecast.normal(28, 2.0, 15, 90)
    later = forecast.at_least(32)
    assert later.shortest == 32 and later.median >= 32 and later.interval[0] >= 32
    assert np.isclose(later.probabilities.sum(), 1.0)
    assert LengthForecast.normal(28, 1.0, 15, 40).at_least(60).median == 60  # past every day


def test_two_cycles_in_a_row_add_their_lengths_and_their_doubts():
    one = LengthForecast.normal(28, 2.0, 15, 90)
    two = one.then(one)
    assert two.median == 56
    assert two.interval[1] - two.interval[0] > one.interval[1] - one.interval[0]
