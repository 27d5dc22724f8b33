"""How well the cycle calculator predicts the next period, on real data.

FedCycleData (../shared/data, see its README): 1,665 cycles of 159 women. Each woman's
cycles are laid out as period start dates and walked forward in time: at every period start
after her first, the calculator sees only the starts so far and predicts the next one. It
never sees a later cycle. `python -m planher evaluate` prints the same figures (and the
energy ones); run this file with `-s` to see them too.
"""

import statistics
import subprocess
import sys

import pytest

from planher.config import ROOT_DIR
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.lengths import cycle_lengths
from planher.energy.demo import DEMO_CONTRARY_ENERGY_BY_PHASE
from planher.evaluation import (
    FEDCYCLE_DATA,
    evaluate_energy,
    evaluate_next_start,
    evaluate_with_ovulation,
    leave_one_out_priors,
    read_fedcycle,
    walk_forward,
)

MEAN_OF_PAST_MAE = 2.20  # the data README's reference for the mean of her past cycles


@pytest.fixture(scope="module")
def women():
    if not FEDCYCLE_DATA.is_file():
        pytest.skip(f"FedCycleData is not at {FEDCYCLE_DATA} (../shared/data beside)")
    return read_fedcycle(FEDCYCLE_DATA)


@pytest.fixture(scope="module")
def figures(women):
    return evaluate_next_start(women)


def baselines(women) -> dict[str, float]:
    """The data README's reference predictors, and PlanHer's unrounded estimate."""
    mean_of_past, always_28, estimate = [], [], []
    for cycles in women.values():
        for starts, _, actual in walk_forward(cycles):
            if len(starts) < 2:
                continue
            actual_length = (actual - starts[-1]).days
            past = cycle_lengths(starts)
            mean_of_past.append(abs(statistics.mean(past) - actual_length))
            always_28.append(abs(28 - actual_length))
            calendar = CycleCalendar.build([PeriodSpan(s, None) for s in starts])
            estimate.append(abs(calendar.estimate.days - actual_length))
    return {
        "mean_of_past_mae_days": statistics.mean(mean_of_past),
        "always_28_mae_days": statistics.mean(always_28),
        "estimate_mae_days": statistics.mean(estimate),
    }


def test_the_loader_reproduces_the_data_readmes_reference_figures(women, figures):
    assert figures["predictions"] == 1506
    reference = baselines(women)
    assert reference["mean_of_past_mae_days"] == pytest.approx(MEAN_OF_PAST_MAE, abs=0.005)
    assert reference["always_28_mae_days"] == pytest.approx(2.82, abs=0.005)


def test_the_next_period_estimate_beats_the_mean_of_her_past_cycles(women, figures, capsys):
    reference = baselines(women)
    with capsys.disabled():
        print(
            "\nFedCycleData, {predictions} predictions walking forward: next start MAE "
            "{mae_days:.3f} days, within ±2 days {within_2_days:.1%}, range holds the actual "
            "start {range_coverage:.1%}, mean range width {mean_range_width_days:.2f} "
            "days".format(**figures)
            + " (estimate {estimate_mae_days:.3f}; mean of past cycles "
            "{mean_of_past_mae_days:.3f})".format(**reference)
        )
    assert reference["estimate_mae_days"] < reference["mean_of_past_mae_days"]
    assert figures["mae_days"] < MEAN_OF_PAST_MAE  # whole days, as the user sees them


def test_the_predicted_range_holds_the_actual_start_at_least_80_percent_of_the_time(figures):
    assert figures["range_coverage"] >= 0.80
    assert figures["mean_range_width_days"] <= 8


def test_a_population_prior_learned_from_the_other_women_helps_women_with_few_cycles(
    women, figures, capsys
):
    priors = leave_one_out_priors(women)
    pooled = evaluate_next_start(women, priors)
    few_before = evaluate_next_start(women, few=True)
    few_after = evaluate_next_start(women, priors, few=True)
    with capsys.disabled():
        print(
            "\nFedCycleData with the population prior (learned from the other women only): "
            f"next start MAE {pooled['mae_days']:.3f} days (textbook 28: "
            f"{figures['mae_days']:.3f}), range holds the actual start "
            f"{pooled['range_coverage']:.1%}; with 1-2 known cycles "
            f"({few_after['predictions']} predictions) MAE {few_after['mae_days']:.3f} "
            f"(textbook 28: {few_before['mae_days']:.3f})"
        )
    assert few_after["mae_days"] < few_before["mae_days"]
    assert pooled["mae_days"] <= figures["mae_days"]
    assert pooled["range_coverage"] >= 0.80


def test_once_ovulation_is_known_the_next_start_comes_from_her_luteal_phase(women, capsys):
    figures = evaluate_with_ovulation(women)
    with capsys.disabled():
        print(
            "\nFedCycleData, ovulation known (LH positive the day before, predicted two days "
            "later), {predictions} predictions: next start MAE {mae_days:.3f} days, within ±2 "
            "days {within_2_days:.1%}, range holds the actual start {range_coverage:.1%}, mean "
            "range width {mean_range_width_days:.2f} days".format(**figures)
        )
    # generous floors; the README has the measured figures
    assert figures["mae_days"] < 1.8
    assert figures["within_2_days"] >= 0.80


def test_the_evaluate_command_prints_every_figure_beside_its_baseline():
    if not FEDCYCLE_DATA.is_file():
        pytest.skip(f"FedCycleData is not at {FEDCYCLE_DATA} (../shared/data beside)")
    printed = subprocess.run(
        [sys.executable, "-m", "planher", "evaluate", "--women", "2"],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    for figure in (
        "textbook prior 28",
        "population prior (other women)",
        "1-2 known cycles",
        "ovulation known",
        "typical          60 days: PlanHer",
        "typical         120 days: PlanHer",
        "unlike everyone  60 days: PlanHer",
        "unlike everyone 120 days: PlanHer",
        "her majority level",
        "phase table",
        "best possible",
        "Brier",
        "personal model shipped for",
    ):
        assert figure in printed, figure
    assert "MAE 1.381 d" in printed  # the same figure as the test above


def test_pooled_energy_models_are_never_worse_than_the_phase_table_and_learn_a_different_woman():
    typical = evaluate_energy(60, women=5)
    assert typical["planher"] >= typical["majority"] + 0.15  # issue 13: 15 points over
    assert typical["planher"] >= typical["phase_table"] - 0.01  # never below (one point)
    assert typical["planher_brier"] < typical["phase_table_brier"]
    unlike = evaluate_energy(
        120, women=5, energy_by_phase=DEMO_CONTRARY_ENERGY_BY_PHASE
    )
    assert unlike["planher"] >= unlike["phase_table"] + 0.2  # her own pattern, learned
    assert unlike["planher_shipped_actual"] >= unlike["planher_reported"] - 0.05  # no flattery
