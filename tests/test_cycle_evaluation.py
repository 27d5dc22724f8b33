"""How well the next period is foreseen on real cycles, beside other trackers' rules.

FedCycleData (../shared/data, see its README): 1,665 cycles of 159 women, split in halves;
the population is learned from one half and each woman of the other is walked forward: at
every period start after her first, the forecast sees only the starts so far. `python -m
planher evaluate` prints the same tables; run this file with `-s` to see the headline.
"""

import statistics

import pytest

from conftest import planher_command
from planher.cycle_evaluation import (
    FEDCYCLE_DATA,
    CycleFileError,
    at_cycle_start,
    by_known_cycles,
    cross_fitted_populations,
    read_cycle_lengths,
    read_fedcycle,
    scores,
    walk_forward,
    with_ovulation_known,
)
from planher.cycles.lengths import cycle_lengths

MEAN_OF_PAST_MAE = 2.20  # the data README's reference for the mean of her past cycles
OVULATION_KNOWN_MAE_BEFORE = 1.381  # issue 22: the ovulation-known figures no worse


@pytest.fixture(scope="module")
def women():
    if not FEDCYCLE_DATA.is_file():
        pytest.skip(f"FedCycleData is not at {FEDCYCLE_DATA} (../shared/data beside)")
    return read_fedcycle(FEDCYCLE_DATA)


@pytest.fixture(scope="module")
def populations(women):
    return cross_fitted_populations(women)


@pytest.fixture(scope="module")
def tables(women, populations):
    forecasts = at_cycle_start(women, populations)
    return {rule: by_known_cycles(rule_forecasts) for rule, rule_forecasts in forecasts.items()}


def test_the_loader_reproduces_the_data_readmes_reference_figures(women, tables):
    mean_of_past, always_28 = [], []
    for cycles in women.values():
        for starts, _, actual in walk_forward(cycles):
            if lengths := cycle_lengths(starts):
                actual_length = (actual - starts[-1]).days
                mean_of_past.append(abs(statistics.mean(lengths) - actual_length))
                always_28.append(abs(28 - actual_length))
    assert len(mean_of_past) == tables["PlanHer"]["all"]["predictions"] == 1506
    assert statistics.mean(mean_of_past) == pytest.approx(MEAN_OF_PAST_MAE, abs=0.005)
    assert statistics.mean(always_28) == pytest.approx(2.82, abs=0.005)


def test_planher_beats_every_other_rule_on_the_same_forecasts(tables, capsys):
    planher = tables["PlanHer"]
    with capsys.disabled():
        print(
            "\nFedCycleData at cycle start, cross-fitted: PlanHer MAE {mae_days:.3f} d, bias "
            "{bias_days:+.2f} d, range holds it {range_coverage:.1%}, width "
            "{mean_range_width_days:.2f} d".format(**planher["all"])
            + f"; 1-2 known cycles MAE {planher['1-2']['mae_days']:.3f} d"
        )
    for rule in ("mean of past cycles", "median of last 5"):
        for group in ("all", "1-2", "3-5", "6+"):
            assert planher[group]["mae_days"] < tables[rule][group]["mae_days"], (rule, group)
    three_or_more = scores_of_three_or_more(tables)
    assert three_or_more["PlanHer"] < three_or_more["drip's rule"]


def scores_of_three_or_more(tables) -> dict[str, float]:
    """MAE over forecasts with 3+ known cycles (drip's rule forecasts only those)."""
    result = {}
    for rule in ("PlanHer", "drip's rule"):
        groups = [tables[rule][group] for group in ("3-5", "6+")]
        total = sum(group["predictions"] for group in groups)
        result[rule] = sum(group["mae_days"] * group["predictions"] for group in groups) / total
    return result


def test_the_range_holds_the_start_80_to_88_percent_of_the_time_and_is_no_wider_than_before(
    tables,
):
    planher = tables["PlanHer"]["all"]
    assert 0.80 <= planher["range_coverage"] <= 0.88
    assert planher["mean_range_width_days"] <= 6.4  # issue 22: no wider than before it
    assert abs(planher["bias_days"]) <= 0.3


def test_a_population_learned_from_other_women_beats_the_built_in_one(tables):
    assert tables["PlanHer"]["all"]["mae_days"] <= tables["PlanHer, new service"]["all"]["mae_days"]
    learned, built_in = tables["PlanHer"]["all"], tables["PlanHer, new service"]["all"]
    assert learned["mean_range_width_days"] < built_in["mean_range_width_days"]


def test_once_ovulation_is_known_the_next_start_comes_from_her_luteal_phase(
    women, populations, capsys
):
    figures = scores(with_ovulation_known(women, populations))
    with capsys.disabled():
        print(
            "\nFedCycleData, ovulation known (LH positive the day before, asked two days "
            "later), {predictions} forecasts: MAE {mae_days:.3f} d, within ±2 d "
            "{within_2_days:.1%}, range holds it {range_coverage:.1%}, width "
            "{mean_range_width_days:.2f} d".format(**figures)
        )
    assert figures["mae_days"] <= OVULATION_KNOWN_MAE_BEFORE
    assert figures["range_coverage"] >= 0.80


def write_cycles(path, rows: list[str]) -> None:
    path.write_text("woman,cycle_length\n" + "\n".join(rows) + "\n")


def test_the_evaluate_command_scores_anyones_cycle_lengths_beside_the_other_rules(tmp_path):
    mine = tmp_path / "mine.csv"
    write_cycles(
        mine,
        [f"w{woman},{27 + (woman + cycle) % 4}" for woman in range(30) for cycle in range(8)],
    )
    printed = planher_command(
        "evaluate", "--fedcycle", str(tmp_path / "none.csv"), "--cycles", str(mine), "--women", "2"
    ).stdout
    assert "FedCycleData is not at" in printed
    assert "Next period at cycle start, mine.csv (30 women" in printed
    for line in (
        "known cycles all:",
        "known cycles 1-2:",
        "known cycles 6+:",
        "PlanHer ",
        "mean of past cycles",
        "median of last 5",
        "drip's rule",
        "within ±1/±2/±3 d",
        "range holds it",
        "bias",
    ):
        assert line in printed, line


def test_a_cycle_file_that_cannot_be_read_is_refused_with_the_line_that_says_why(tmp_path):
    broken = tmp_path / "broken.csv"
    write_cycles(broken, ["w1,28", "w1,twenty-nine"])
    with pytest.raises(CycleFileError, match="line 3: cycle_length 'twenty-nine'"):
        read_cycle_lengths(broken)
    finished = planher_command("evaluate", "--cycles", str(broken), check=False)
    assert finished.returncode == 1 and "Traceback" not in finished.stderr
    assert "line 3" in finished.stderr
    headless = tmp_path / "headless.csv"
    headless.write_text("w1,28\n")
    with pytest.raises(CycleFileError, match="woman,cycle_length"):
        read_cycle_lengths(headless)


def test_an_empty_length_breaks_her_chain_of_dates(tmp_path):
    mine = tmp_path / "gap.csv"
    write_cycles(mine, ["w1,28", "w1,", "w1,29", "w1,30"])
    assert read_cycle_lengths(mine) == {"w1": [(28, None), (None, None), (29, None), (30, None)]}
    assert [len(starts) for starts, _, _ in walk_forward(read_cycle_lengths(mine)["w1"])] == [
        1,
        1,
        2,
    ]
