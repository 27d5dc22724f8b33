"""`python -m planher evaluate`: the predictions scored on FedCycleData and the demo generator."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from planher.config import ROOT_DIR
from planher.cycles.calendar import CycleCalendar, CycleDay, PeriodSpan
from planher.cycles.lengths import TEXTBOOK_CYCLE_PRIOR, CyclePrior, population_cycle_prior
from planher.cycles.ovulation import FertilitySign
from planher.energy.demo import (
    DEMO_CONTRARY_ENERGY_BY_PHASE,
    DEMO_ENERGY_BY_PHASE,
    bayes_rate,
    generate_demo_history,
)
from planher.energy.models import (
    PHASE_PRIOR,
    PHASE_PRIOR_MODEL,
    EnergyModel,
    ForwardScore,
    one_hot,
    predict_energy,
    train_on_samples,
)

FEDCYCLE_DATA = ROOT_DIR.parent / "shared" / "data" / "FedCycleData071012.csv"
FEDCYCLE_FIRST_START = dt.date(2000, 1, 1)  # the file has lengths, not dates
FEDCYCLE_BREAK_DAYS = 300  # a missing length breaks her chain of dates: start anew
ENERGY_EVALUATION_WOMEN = 20
ENERGY_EVALUATION_TEST_DAYS = 60  # her following days, on which each predictor is scored
ENERGY_EVALUATION_OTHER_SEEDS = 1_000  # the population model's women: none evaluated


def read_fedcycle(path: Path) -> dict[str, list[tuple[int | None, int | None]]]:
    """Each woman's (cycle length, estimated day of ovulation) in cycle order. The file
    starts with a byte-order mark, and a missing value is a single space."""
    cycles: dict[str, list[tuple[int, int | None, int | None]]] = collections.defaultdict(list)
    with path.open(encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file):
            length, ovulation = row["LengthofCycle"].strip(), row["EstimatedDayofOvulation"].strip()
            cycles[row["ClientID"].strip()].append(
                (
                    int(row["CycleNumber"]),
                    int(length) if length else None,
                    int(ovulation) if ovulation else None,
                )
            )
    return {
        client: [(length, ovulation) for _, length, ovulation in sorted(rows)]
        for client, rows in cycles.items()
    }


def walk_forward(cycles: Sequence[tuple[int | None, int | None]]):
    """(starts so far, ovulation day of the cycle under way, the actual next start) at each
    start of hers: a predictor sees only the past."""
    starts = [FEDCYCLE_FIRST_START]
    for length, ovulation_day in cycles:
        if length is None:
            starts = [starts[-1] + dt.timedelta(days=FEDCYCLE_BREAK_DAYS)]
            continue
        next_start = starts[-1] + dt.timedelta(days=length)
        yield list(starts), ovulation_day, next_start
        starts.append(next_start)


def leave_one_out_priors(women: Mapping[str, Sequence]) -> dict[str, CyclePrior]:
    """For each woman, the population prior learned from the other women only."""
    lengths = {
        client: [length for length, _ in cycles if length is not None]
        for client, cycles in women.items()
    }
    return {
        client: population_cycle_prior(other for name, other in lengths.items() if name != client)
        for client in women
    }


def score_next_starts(predictions: Sequence[tuple[dict[str, Any], dt.date]]) -> dict[str, float]:
    """MAE, share within ±2 days, range coverage and width of (outlook, actual) pairs."""
    errors = [abs((outlook["next_period_start"] - actual).days) for outlook, actual in predictions]
    ranges = [outlook["next_period_range"] for outlook, _ in predictions]
    return {
        "predictions": len(errors),
        "mae_days": statistics.mean(errors),
        "within_2_days": sum(error <= 2 for error in errors) / len(errors),
        "range_coverage": statistics.mean(
            low <= actual <= high
            for (low, high), (_, actual) in zip(ranges, predictions, strict=True)
        ),
        "mean_range_width_days": statistics.mean((high - low).days for low, high in ranges),
    }


def evaluate_next_start(
    women: Mapping[str, Sequence], priors: Mapping[str, CyclePrior] | None = None, few: bool = False
) -> dict[str, float]:
    """The next start predicted on each start after her first (with `few`: only where she
    has one or two known cycles), towards `priors` (default: the textbook 28)."""
    predictions = []
    for client, cycles in women.items():
        prior = TEXTBOOK_CYCLE_PRIOR if priors is None else priors[client]
        for starts, _, actual in walk_forward(cycles):
            if len(starts) < 2 or (few and len(starts) > 3):
                continue
            calendar = CycleCalendar.build(
                [PeriodSpan(start, None) for start in starts], prior=prior
            )
            predictions.append((calendar.outlook(starts[-1]), actual))
    return score_next_starts(predictions)


def evaluate_with_ovulation(women: Mapping[str, Sequence]) -> dict[str, float]:
    """An LH test positive the day before each cycle's estimated ovulation (and in each
    earlier cycle of hers), the next start predicted two days after it."""
    predictions = []
    for cycles in women.values():
        signs: list[FertilitySign] = []
        for starts, ovulation_day, actual in walk_forward(cycles):
            if len(starts) == 1:
                signs = []  # a new chain of dates
            if ovulation_day is None or not 2 <= ovulation_day < (actual - starts[-1]).days:
                continue
            positive = starts[-1] + dt.timedelta(days=ovulation_day - 2)
            signs.append(FertilitySign(positive, lh_test="positive"))
            calendar = CycleCalendar.build(
                [PeriodSpan(start, None) for start in starts], None, signs
            )
            asked = positive + dt.timedelta(days=2)
            predictions.append((calendar.outlook(asked, asked), actual))
    return score_next_starts(predictions)


def demo_samples(
    days: int,
    today: dt.date,
    seed: int,
    energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE,
) -> list[tuple[CycleDay, None, int]]:
    """A generated woman's labelled days in date order, as training_samples gives them."""
    periods, moods = generate_demo_history(days, today, seed, energy_by_phase)
    calendar = CycleCalendar.build(periods)
    return [(calendar.cycle_day(date), None, level) for date, level in moods]


@functools.cache
def evaluation_population_model(days: int, women: int, today: dt.date) -> EnergyModel | None:
    """The population model of `women` other generated women with `days` days each (seeds
    no evaluated woman has), or None when it would not ship."""
    histories = [
        demo_samples(days, today, seed)
        for seed in range(ENERGY_EVALUATION_OTHER_SEEDS, ENERGY_EVALUATION_OTHER_SEEDS + women)
    ]
    samples = [sample for same_date in zip(*histories, strict=True) for sample in same_date]
    result = train_on_samples(samples, with_profile=True, population=None)
    if not result.shipped:
        return None
    return EnergyModel(source="population", pooled=result.pooled, with_profile=True)


def evaluate_energy(
    days: int,
    women: int = ENERGY_EVALUATION_WOMEN,
    energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE,
) -> dict[str, float]:
    """On the demo generator (whose best possible accuracy is known): train on her first
    `days` days as the service does (pooled toward a population model of other, typical
    women, and, for a new service, toward the phase prior alone), serve what it would
    serve, and score it on the ENERGY_EVALUATION_TEST_DAYS after them. Her days follow
    `energy_by_phase`."""
    hits: dict[str, list[bool]] = collections.defaultdict(list)
    brier: dict[str, list[float]] = collections.defaultdict(list)
    best_possible, reported, actual = (
        [],
        collections.defaultdict(list),
        collections.defaultdict(list),
    )
    today = dt.date(2026, 1, 1)
    populations = {
        "planher": evaluation_population_model(days, women, today),
        "planher_new_service": None,
    }
    for seed in range(women):
        samples = demo_samples(days + ENERGY_EVALUATION_TEST_DAYS, today, seed, energy_by_phase)
        training, test = samples[:days], samples[days:]
        cycles = [cycle for cycle, _, _ in test]
        levels = np.asarray([level for _, _, level in test])
        majority = collections.Counter(level for *_, level in training).most_common(1)[0][0]
        served = {
            "majority": one_hot([majority] * len(test)),
            "phase_table": np.asarray([PHASE_PRIOR[cycle.phase] for cycle in cycles]),
        }
        for name, population in populations.items():
            result = train_on_samples(training, with_profile=False, population=population)
            model = population or PHASE_PRIOR_MODEL
            if result.shipped:
                model = EnergyModel(source="personal", pooled=result.pooled)
                reported[name].append(result.cv_accuracy)
            answers = predict_energy(model, cycles, None)
            served[name] = np.asarray([probabilities for probabilities, _ in answers])
            if result.shipped:
                actual[name].append(ForwardScore.of(served[name], levels).accuracy)
        for name, probabilities in served.items():
            score = ForwardScore.of(probabilities, levels)
            hits[name].append(score.accuracy)
            brier[name].append(score.brier_score)
        best_possible.append(bayes_rate((cycle.phase for cycle in cycles), energy_by_phase))
    figures = {name: statistics.mean(values) for name, values in hits.items()}
    figures |= {f"{name}_brier": statistics.mean(values) for name, values in brier.items()}
    figures["best_possible"] = statistics.mean(best_possible)
    for name in populations:
        figures[f"{name}_shipped_actual"] = (
            statistics.mean(actual[name]) if actual[name] else math.nan
        )
        figures[f"{name}_reported"] = (
            statistics.mean(reported[name]) if reported[name] else math.nan
        )
        figures[f"{name}_shipped"] = len(reported[name]) / women
    return figures


def evaluation_report(fedcycle: Path, women: int = ENERGY_EVALUATION_WOMEN) -> str:
    """Every figure issue 13 asks for, beside its baseline, as text."""
    lines = []
    if fedcycle.is_file():
        charted = read_fedcycle(fedcycle)
        priors = leave_one_out_priors(charted)
        rows = [
            ("at cycle start, textbook prior 28", evaluate_next_start(charted)),
            (
                "at cycle start, population prior (other women)",
                evaluate_next_start(charted, priors),
            ),
            ("1-2 known cycles, textbook prior 28", evaluate_next_start(charted, few=True)),
            ("1-2 known cycles, population prior", evaluate_next_start(charted, priors, few=True)),
            ("ovulation known (LH the day before, +2 days)", evaluate_with_ovulation(charted)),
        ]
        lines.append(f"Next period on {fedcycle.name} ({len(charted)} women):")
        for name, figures in rows:
            lines.append(
                f"  {name:50} n={figures['predictions']:5}  MAE {figures['mae_days']:.3f} d  "
                f"within ±2 d {figures['within_2_days']:.1%}  range holds it "
                f"{figures['range_coverage']:.1%}  width {figures['mean_range_width_days']:.2f} d"
            )
    else:
        lines.append(f"FedCycleData is not at {fedcycle}: next-period figures skipped.")
    lines.append(
        f"Energy on the demo generator ({women} women of each kind, scored on the "
        f"{ENERGY_EVALUATION_TEST_DAYS} days after training; the population model is "
        f"{women} other, typical women's):"
    )
    kinds = {"typical": DEMO_ENERGY_BY_PHASE, "unlike everyone": DEMO_CONTRARY_ENERGY_BY_PHASE}
    for kind, energy_by_phase in kinds.items():
        for days in (60, 120):
            figures = evaluate_energy(days, women, energy_by_phase)
            lines.append(
                f"  {kind:15} {days:3} days: PlanHer {figures['planher']:.1%} (new service "
                f"{figures['planher_new_service']:.1%})  her majority level "
                f"{figures['majority']:.1%}  phase table {figures['phase_table']:.1%}  best "
                f"possible {figures['best_possible']:.1%}  Brier {figures['planher_brier']:.3f} "
                f"({figures['planher_new_service_brier']:.3f}), phase table "
                f"{figures['phase_table_brier']:.3f}"
            )
            lines.append(
                f"  {'':25}personal model shipped for {figures['planher_shipped']:.0%} "
                f"({figures['planher_new_service_shipped']:.0%}): its cv_accuracy "
                f"{figures['planher_reported']:.1%} "
                f"({figures['planher_new_service_reported']:.1%}), right on the days after "
                f"{figures['planher_shipped_actual']:.1%} "
                f"({figures['planher_new_service_shipped_actual']:.1%})"
            )
    return "\n".join(lines)
