"""Which gaps are cycles, and her luteal phase's estimate (pure: no HTTP, no database)."""

from conftest import D, days
from planher.cycles.lengths import cycle_lengths, estimate_luteal_length


def test_cycle_lengths_leave_out_gaps_that_cannot_be_one_cycle():
    starts = [D, D + days(28), D + days(28 + 14), D + days(28 + 14 + 120), D + days(28 + 14 + 150)]
    assert cycle_lengths(reversed(starts)) == [28, 30]


def test_a_cycle_set_aside_counts_in_no_length():
    starts = [D + days(offset) for offset in (0, 28, 56, 101, 129)]  # 28, 28, 45, 28
    assert cycle_lengths(starts) == [28, 28, 45, 28]
    assert cycle_lengths(starts, {D + days(56)}) == [28, 28, 28]


def test_with_no_luteal_phases_the_estimate_is_her_profiles():
    estimate = estimate_luteal_length([], prior_length=12, prior_spread=1.5)
    assert (estimate.days, estimate.length, estimate.spread, estimate.n_cycles) == (12, 12, 1.5, 0)


def test_few_luteal_phases_are_shrunk_towards_the_profile_and_many_outweigh_it():
    assert 11 < estimate_luteal_length([11], 14, 1.5).days < 14
    assert 11 <= estimate_luteal_length([11] * 24, 14, 1.5).days < 11.4


def test_one_odd_luteal_phase_moves_the_estimate_less_than_the_mean():
    lengths = [12, 13, 12, 12, 19]
    assert estimate_luteal_length(lengths, 12, 1.5).days < sum(lengths) / len(lengths)


def test_the_spread_of_her_next_phase_includes_the_doubt_about_its_mean():
    few, many = (
        estimate_luteal_length([12, 13], 12, 1.5),
        estimate_luteal_length([12, 13] * 10, 12, 1.5),
    )
    assert few.predictive_spread / few.spread > many.predictive_spread / many.spread > 1
