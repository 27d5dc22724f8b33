"""`python -m planher evaluate`: the energy models scored on the demo generator, and the
whole report (the next-period figures are planher.cycle_evaluation's)."""

from __future__ import annotations

import collections
import datetime as dt
import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from planher.cycle_evaluation import (
    cross_fitted_populations,
    next_start_report,
    read_cycle_lengths,
    read_fedcycle,
    score_line,
    scores,
    with_ovulation_known,
)
from planher.cycles.calendar import CycleCalendar, CycleDay
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

ENERGY_EVALUATION_WOMEN = 20
ENERGY_EVALUATION_TEST_DAYS = 60  # her following days, on which each predictor is scored
ENERGY_EVALUATION_OTHER_SEEDS = 1_000  # the population model's women: none evaluated


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


def evaluation_report(
    fedcycle: Path, cycle_files: Sequence[Path] = (), women: int = ENERGY_EVALUATION_WOMEN
) -> str:
    """Every figure of the next-period forecast (on FedCycleData and on each of
    `cycle_files`) and of the energy models, beside their baselines, as text."""
    lines = []
    if fedcycle.is_file():
        charted = read_fedcycle(fedcycle)
        populations = cross_fitted_populations(charted)
        lines += next_start_report(fedcycle.name, charted, populations)
        lines.append("Next period once ovulation is known (LH the day before, asked 2 days on):")
        lines.append(score_line("PlanHer", scores(with_ovulation_known(charted, populations))))
    else:
        lines.append(f"FedCycleData is not at {fedcycle}: its next-period figures skipped.")
    for path in cycle_files:
        theirs = read_cycle_lengths(path)
        lines += next_start_report(path.name, theirs, cross_fitted_populations(theirs))
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
