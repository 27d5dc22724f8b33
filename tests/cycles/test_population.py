"""The hierarchical model of cycle length, learned from everyone (pure: no HTTP, no database)."""

import random

from conftest import D, days
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.lengths import cycle_lengths
from planher.cycles.population import BUILT_IN_POPULATION, learn_population


def women_like(typical: int, spread: float, count: int, cycles: int, seed: int = 1):
    draw = random.Random(seed)
    return [[round(draw.gauss(typical, spread)) for _ in range(cycles)] for _ in range(count)]


def test_a_new_service_forecasts_from_its_built_in_population():
    forecast = BUILT_IN_POPULATION.forecast([])
    assert 28 <= forecast.median <= 30
    low, high = forecast.interval
    assert low < forecast.median < high


def test_the_population_is_learned_from_the_womens_own_cycles():
    short = learn_population(women_like(26, 1.0, 300, 8))
    long = learn_population(women_like(33, 1.0, 300, 8))
    assert short.n_women == long.n_women == 300
    assert short.forecast([]).median in (25, 26, 27) and long.forecast([]).median in (32, 33, 34)


def test_women_with_at_most_one_cycle_each_are_learned_from_too():
    # A new service: its first women have logged one or two periods each.
    population = learn_population([[34], [], [31]])
    assert population.n_women == 2  # she who has no cycle yet is no one's evidence
    assert 28 <= population.forecast([]).median <= 34


def test_one_long_cycle_among_regular_women_moves_her_little_and_ten_decide():
    population = learn_population(women_like(28, 1.0, 200, 10))
    assert abs(population.forecast([40]).median - 28) < abs(population.forecast([40]).median - 40)
    assert population.forecast([35] * 10).median in (34, 35, 36)


def test_a_woman_who_varies_gets_a_wider_range_than_a_regular_one():
    population = learn_population(women_like(28, 1.5, 200, 10) + women_like(30, 4.0, 100, 10, 2))
    regular = population.forecast([28, 28, 29, 28, 28, 28, 27, 28]).interval
    varied = population.forecast([24, 33, 27, 35, 22, 31, 26, 36]).interval
    assert regular[1] - regular[0] < varied[1] - varied[0]


def test_her_stated_cycle_length_places_her_and_her_cycles_move_her_from_it():
    population = learn_population(women_like(28, 2.0, 200, 8))
    assert population.forecast([], stated_length=33).median == 33
    assert 28 < population.forecast([28, 29], stated_length=33).median < 33
    calendar = CycleCalendar.build(
        [PeriodSpan(D, None)],
        {"cycle_length": 33, "luteal_length": 14, "menses_length": 5},
        population=population,
    )
    assert calendar.estimate.median == population.forecast([], 33).median


def test_cycles_she_set_aside_enter_neither_her_forecast_nor_the_population():
    starts = [D + days(offset) for offset in (0, 28, 56, 101, 129)]  # 28, 28, 45, 28
    spans = [PeriodSpan(start, None, excluded=start == D + days(56)) for start in starts]
    assert (
        CycleCalendar.build(spans).estimate.median
        == BUILT_IN_POPULATION.forecast([28, 28, 28]).median
    )
    with_long = learn_population([cycle_lengths(starts)] * 40)
    set_aside = learn_population([cycle_lengths(starts, {D + days(56)})] * 40)
    usual = learn_population([[28, 28, 28]] * 40)
    assert (set_aside.weights == usual.weights).all()
    assert set_aside.irregular_share == usual.irregular_share != with_long.irregular_share


def test_forecasts_are_kept_so_that_her_home_screen_does_not_compute_hers_again():
    population = learn_population(women_like(28, 1.0, 50, 5))
    assert population.forecast([28, 29]) is population.forecast((28, 29))
