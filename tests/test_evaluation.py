"""The energy models on the demo generator, and the evaluate command's whole report."""

import pytest

from conftest import planher_command
from planher.cycle_evaluation import (
    FEDCYCLE_DATA,
    cross_fitted_populations,
    read_fedcycle,
    scores,
    with_ovulation_known,
)
from planher.energy.demo import DEMO_CONTRARY_ENERGY_BY_PHASE
from planher.evaluation import evaluate_energy


def test_the_evaluate_command_prints_every_figure_beside_its_baseline():
    if not FEDCYCLE_DATA.is_file():
        pytest.skip(f"FedCycleData is not at {FEDCYCLE_DATA} (../shared/data beside)")
    printed = planher_command("evaluate", "--women", "2").stdout
    for figure in (
        "Next period at cycle start, FedCycleData071012.csv (159 women",
        "known cycles 1-2:",
        "PlanHer, new service",
        "drip's rule",
        "ovulation is known",
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
    charted = read_fedcycle(FEDCYCLE_DATA)
    ovulation_known = scores(with_ovulation_known(charted, cross_fitted_populations(charted)))
    assert f"MAE {ovulation_known['mae_days']:.3f} d" in printed  # the same figure as its test


def test_pooled_energy_models_are_never_worse_than_the_phase_table_and_learn_a_different_woman():
    typical = evaluate_energy(60, women=5)
    assert typical["planher"] >= typical["majority"] + 0.15  # issue 13: 15 points over
    assert typical["planher"] >= typical["phase_table"] - 0.01  # never below (one point)
    assert typical["planher_brier"] < typical["phase_table_brier"]
    unlike = evaluate_energy(120, women=5, energy_by_phase=DEMO_CONTRARY_ENERGY_BY_PHASE)
    assert unlike["planher"] >= unlike["phase_table"] + 0.2  # her own pattern, learned
    assert unlike["planher_shipped_actual"] >= unlike["planher_reported"] - 0.05  # no flattery
