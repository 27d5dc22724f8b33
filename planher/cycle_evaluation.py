"""The next-period forecast scored on real cycles, beside the rules other trackers use.

Women are split in two halves; the population is learned from one half and each woman of
the other is walked forward, cycle by cycle: at each of her period starts the forecast sees
only the starts before (and the other half's women), as the service would, and is scored
on the start that came. So the population part never sees the woman it predicts.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from planher.config import CYCLE_MAX_DAYS, CYCLE_MIN_DAYS, ROOT_DIR
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.cycles.lengths import cycle_lengths
from planher.cycles.ovulation import FertilitySign
from planher.cycles.population import BUILT_IN_POPULATION, CyclePopulation, learn_population

FEDCYCLE_DATA = ROOT_DIR.parent / "shared" / "data" / "FedCycleData071012.csv"
FIRST_START = dt.date(2000, 1, 1)  # the files have lengths, not dates
BREAK_DAYS = 300  # a missing length breaks her chain of dates: start anew
DRIP_MAX_CYCLES = 12  # drip averages her last 12 cycles…
DRIP_MIN_CYCLES = 3  # …once she has 3, and gives ±1 day when their sd is under 1.5, else ±2
DRIP_REGULAR_SD_DAYS = 1.5
KNOWN_CYCLE_GROUPS = (("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6+", 6, 10**6))

# Each woman's cycles in order: (length, estimated day of ovulation); None where unknown.
Cycles = Sequence[tuple[int | None, int | None]]


class CycleFileError(ValueError):
    """A cycle-length file that cannot be read, with the line that says why."""


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


def read_cycle_lengths(path: Path) -> dict[str, list[tuple[int | None, None]]]:
    """Anyone's cycles: a CSV with the header `woman,cycle_length` and one row per cycle,
    each woman's in order. An empty length is a cycle not known (it breaks her chain)."""
    women: dict[str, list[tuple[int | None, None]]] = collections.defaultdict(list)
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        header = [name.strip().lower() for name in next(reader, [])]
        if header[:2] != ["woman", "cycle_length"]:
            raise CycleFileError(f"{path}: the first line must be `woman,cycle_length`")
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            woman, length = (row + [""])[0].strip(), (row + ["", ""])[1].strip()
            if not woman:
                raise CycleFileError(f"{path}, line {line}: no woman")
            if length and not (length.isdigit() and 1 <= int(length) <= 366):
                raise CycleFileError(
                    f"{path}, line {line}: cycle_length {length!r} is not a number of days"
                )
            women[woman].append((int(length) if length else None, None))
    if not women:
        raise CycleFileError(f"{path}: no cycles")
    return dict(women)


def walk_forward(cycles: Cycles) -> Iterator[tuple[list[dt.date], int | None, dt.date]]:
    """(starts so far, ovulation day of the cycle under way, the actual next start) at each
    start of hers: a predictor sees only the past."""
    starts = [FIRST_START]
    for length, ovulation_day in cycles:
        if length is None:
            starts = [starts[-1] + dt.timedelta(days=BREAK_DAYS)]
            continue
        next_start = starts[-1] + dt.timedelta(days=length)
        yield list(starts), ovulation_day, next_start
        starts.append(next_start)


def lengths_of(cycles: Cycles) -> list[int]:
    """Her lengths that count as cycles, as the service would see them."""
    return [
        length
        for length, _ in cycles
        if length is not None and CYCLE_MIN_DAYS <= length <= CYCLE_MAX_DAYS
    ]


def halves(women: Mapping[str, Cycles]) -> tuple[list[str], list[str]]:
    names = sorted(women)
    return names[0::2], names[1::2]


def cross_fitted_populations(women: Mapping[str, Cycles]) -> dict[str, CyclePopulation]:
    """For each woman, the population learned from the other half's women only."""
    first, second = halves(women)
    learned_from = {
        0: learn_population(lengths_of(women[name]) for name in second),
        1: learn_population(lengths_of(women[name]) for name in first),
    }
    return {name: learned_from[0] for name in first} | {name: learned_from[1] for name in second}


@dataclasses.dataclass(frozen=True)
class Forecast:
    known_cycles: int
    error_days: int  # predicted − actual start
    range_held: bool | None  # None for a rule with no range
    range_width_days: int | None


def forecast_from(
    predicted: dt.date, actual: dt.date, known: int, range_: Sequence[dt.date] | None = None
) -> Forecast:
    return Forecast(
        known,
        (predicted - actual).days,
        None if range_ is None else range_[0] <= actual <= range_[1],
        None if range_ is None else (range_[1] - range_[0]).days,
    )


def planher_rule(population: CyclePopulation) -> Callable:
    def predict(starts: list[dt.date], lengths: list[int], actual: dt.date) -> Forecast:
        calendar = CycleCalendar.build(
            [PeriodSpan(start, None) for start in starts], population=population
        )
        outlook = calendar.outlook(starts[-1])
        return forecast_from(
            outlook["next_period_start"], actual, len(lengths), outlook["next_period_range"]
        )

    return predict


def mean_of_past(starts, lengths, actual) -> Forecast:
    return forecast_from(
        starts[-1] + dt.timedelta(days=round(statistics.mean(lengths))), actual, len(lengths)
    )


def median_of_last_5(starts, lengths, actual) -> Forecast:
    median = round(statistics.median(lengths[-5:]))
    return forecast_from(starts[-1] + dt.timedelta(days=median), actual, len(lengths))


def drips_rule(starts, lengths, actual) -> Forecast | None:
    """drip's (the open-source tracker): the mean of her last 12 cycles, ±1 day when they
    vary little, else ±2; nothing before her third cycle."""
    if len(lengths) < DRIP_MIN_CYCLES:
        return None
    recent = lengths[-DRIP_MAX_CYCLES:]
    predicted = starts[-1] + dt.timedelta(days=round(statistics.mean(recent)))
    half = 1 if statistics.stdev(recent) < DRIP_REGULAR_SD_DAYS else 2
    range_ = (predicted - dt.timedelta(days=half), predicted + dt.timedelta(days=half))
    return forecast_from(predicted, actual, len(lengths), range_)


def at_cycle_start(
    women: Mapping[str, Cycles], populations: Mapping[str, CyclePopulation]
) -> dict[str, list[Forecast]]:
    """Every rule's forecast at each start of every woman with a cycle behind her (PlanHer's
    with `populations`, cross_fitted_populations' answer)."""
    forecasts: dict[str, list[Forecast]] = collections.defaultdict(list)
    for name, cycles in women.items():
        rules = {
            "PlanHer": planher_rule(populations[name]),
            "PlanHer, new service": planher_rule(BUILT_IN_POPULATION),
            "mean of past cycles": mean_of_past,
            "median of last 5": median_of_last_5,
            "drip's rule": drips_rule,
        }
        for starts, _, actual in walk_forward(cycles):
            lengths = cycle_lengths(starts)
            if not lengths:
                continue
            for rule, predict in rules.items():
                if (forecast := predict(starts, lengths, actual)) is not None:
                    forecasts[rule].append(forecast)
    return forecasts


def with_ovulation_known(
    women: Mapping[str, Cycles], populations: Mapping[str, CyclePopulation]
) -> list[Forecast]:
    """An LH test positive the day before each cycle's estimated ovulation (and in each
    earlier cycle of hers), the next start predicted two days after it."""
    forecasts = []
    for name, cycles in women.items():
        signs: list[FertilitySign] = []
        for starts, ovulation_day, actual in walk_forward(cycles):
            if len(starts) == 1:
                signs = []  # a new chain of dates
            if ovulation_day is None or not 2 <= ovulation_day < (actual - starts[-1]).days:
                continue
            positive = starts[-1] + dt.timedelta(days=ovulation_day - 2)
            signs.append(FertilitySign(positive, lh_test="positive"))
            calendar = CycleCalendar.build(
                [PeriodSpan(start, None) for start in starts], None, signs, populations[name]
            )
            asked = positive + dt.timedelta(days=2)
            outlook = calendar.outlook(asked, asked)
            forecasts.append(
                forecast_from(
                    outlook["next_period_start"],
                    actual,
                    len(cycle_lengths(starts)),
                    outlook["next_period_range"],
                )
            )
    return forecasts


def scores(forecasts: Sequence[Forecast]) -> dict[str, float]:
    """MAE and bias (days), share within ±1/±2/±3 days, range coverage and mean width."""
    errors = [forecast.error_days for forecast in forecasts]
    ranged = [forecast for forecast in forecasts if forecast.range_held is not None]
    return {
        "predictions": len(errors),
        "mae_days": statistics.mean(abs(error) for error in errors),
        "bias_days": statistics.mean(errors),
        **{
            f"within_{days}_days": statistics.mean(abs(e) <= days for e in errors)
            for days in (1, 2, 3)
        },
        "range_coverage": statistics.mean(f.range_held for f in ranged) if ranged else None,
        "mean_range_width_days": statistics.mean(f.range_width_days for f in ranged)
        if ranged
        else None,
    }


def by_known_cycles(forecasts: Sequence[Forecast]) -> dict[str, dict[str, float]]:
    """The scores of all forecasts, of those with 1-2 known cycles, and of each group."""
    groups = {"all": list(forecasts), "1-2": [f for f in forecasts if f.known_cycles <= 2]}
    for label, fewest, most in KNOWN_CYCLE_GROUPS:
        groups[label] = [f for f in forecasts if fewest <= f.known_cycles <= most]
    return {label: scores(group) for label, group in groups.items() if group}


def score_line(label: str, figures: Mapping[str, float | None]) -> str:
    ranged = (
        f"range holds it {figures['range_coverage']:6.1%}  "
        f"width {figures['mean_range_width_days']:5.2f} d"
        if figures["range_coverage"] is not None
        else "no range"
    )
    return (
        f"  {label:22} n={figures['predictions']:5}  MAE {figures['mae_days']:.3f} d  bias "
        f"{figures['bias_days']:+.2f} d  within ±1/±2/±3 d {figures['within_1_days']:6.1%} "
        f"{figures['within_2_days']:6.1%} {figures['within_3_days']:6.1%}  {ranged}"
    )


def next_start_report(
    title: str, women: Mapping[str, Cycles], populations: Mapping[str, CyclePopulation]
) -> list[str]:
    """Every rule's scores at cycle start, by how many cycles each woman had behind her."""
    forecasts = at_cycle_start(women, populations)
    tables = {rule: by_known_cycles(rule_forecasts) for rule, rule_forecasts in forecasts.items()}
    lines = [
        f"Next period at cycle start, {title} ({len(women)} women, halves cross-fitted: the "
        "population learned from the other half):"
    ]
    for group in ("all", "1-2", *(label for label, _, _ in KNOWN_CYCLE_GROUPS)):
        lines.append(f" known cycles {group}:")
        for rule, table in tables.items():
            if group in table:
                lines.append(score_line(rule, table[group]))
    return lines
