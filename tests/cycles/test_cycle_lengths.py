"""Her typical cycle length and the population prior (pure: no HTTP, no database)."""

from conftest import D, days
from planher.config import (
    POPULATION_CYCLE_SD,
    POPULATION_PRIOR_MIN_WOMEN,
)
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.lengths import (
    TEXTBOOK_CYCLE_PRIOR,
    CyclePrior,
    cycle_lengths,
    estimate_cycle_length,
    population_cycle_prior,
)


def test_cycle_lengths_leave_out_gaps_that_cannot_be_one_cycle():
    starts = [D, D + days(28), D + days(28 + 14), D + days(28 + 14 + 120), D + days(28 + 14 + 150)]
    assert cycle_lengths(reversed(starts)) == [28, 30]


def test_with_no_cycles_the_estimate_is_the_prior():
    estimate = estimate_cycle_length([], prior_length=31)
    assert (estimate.days, estimate.length, estimate.n_cycles) == (31.0, 31, 0)
    assert estimate.spread == POPULATION_CYCLE_SD


def test_few_cycles_are_shrunk_towards_the_prior_and_many_outweigh_it():
    one = estimate_cycle_length([34], prior_length=28)
    assert 28 < one.days < 34
    many = estimate_cycle_length([34] * 24, prior_length=28)
    assert 33.4 < many.days < 34


def test_one_outlying_cycle_moves_the_estimate_less_than_the_mean():
    lengths = [28, 29, 28, 27, 28, 45]
    estimate = estimate_cycle_length(lengths, prior_length=28)
    assert estimate.days < 28.6 < sum(lengths) / len(lengths)


def test_regular_cycles_give_a_narrower_range_than_irregular_ones():
    regular = estimate_cycle_length([28, 28, 29, 28, 28, 28, 27, 28], 28)
    irregular = estimate_cycle_length([24, 33, 27, 35, 22, 31, 26, 36], 28)
    assert 1 <= regular.range_days < irregular.range_days


def test_the_population_prior_is_everyones_typical_cycle_once_enough_women_logged():
    few = [[30, 31, 30]] * (POPULATION_PRIOR_MIN_WOMEN - 1)
    assert population_cycle_prior(few) == TEXTBOOK_CYCLE_PRIOR
    short_logs = [[33, 33]] * 50  # women with too few cycles do not count
    assert population_cycle_prior(short_logs) == TEXTBOOK_CYCLE_PRIOR
    enough = [*few, [30, 31, 30], [31, 60, 31, 31]]  # one vote each, her median
    prior = population_cycle_prior(enough)
    assert prior.n_women == POPULATION_PRIOR_MIN_WOMEN + 1
    assert 30 <= prior.length <= 31 and prior.spread == POPULATION_CYCLE_SD


def test_a_woman_without_a_profile_is_shrunk_towards_the_prior_and_her_profile_wins():
    prior = CyclePrior(32.0, 3.0, 100)
    one_cycle = [PeriodSpan(D, None), PeriodSpan(D + days(30), None)]
    assert CycleCalendar.build(one_cycle, prior=prior).estimate.days == 31.0
    assert CycleCalendar.build(one_cycle).estimate.days == 29.0
    profile = {"cycle_length": 26, "luteal_length": 14, "menses_length": 5}
    assert CycleCalendar.build(one_cycle, profile, prior=prior).estimate.days == 28.0


def test_a_cycle_set_aside_counts_in_no_length_and_in_no_population_prior():
    starts = [D + days(offset) for offset in (0, 28, 56, 101, 129)]  # 28, 28, 45, 28
    assert cycle_lengths(starts) == [28, 28, 45, 28]
    assert cycle_lengths(starts, {D + days(56)}) == [28, 28, 28]
    usual = [cycle_lengths([D + days(offset) for offset in (0, 28, 56, 84)])] * 40
    set_aside = [cycle_lengths(starts, {D + days(56)})] * 40
    assert population_cycle_prior(set_aside) == population_cycle_prior(usual)
