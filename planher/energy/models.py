"""Energy models: candidates, partial pooling, forward-in-time validation, the cache (pure)."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import io
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import itsdangerous
import joblib
import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from planher.config import ENERGY_LABELS
from planher.cycles.calendar import CycleDay
from planher.energy.features import energy_features

# P(low, medium, high) by phase, served while no model can be: energy tends to be lowest
# during menses and highest around ovulation. None is "phase unknown".
PHASE_PRIOR = {
    "menstrual": (0.55, 0.35, 0.10),
    "follicular": (0.15, 0.40, 0.45),
    "ovulatory": (0.10, 0.30, 0.60),
    "luteal": (0.30, 0.50, 0.20),
    "late": (0.35, 0.45, 0.20),
    None: (0.30, 0.40, 0.30),
}
PERSONAL_MIN_DAYS = 10  # labelled days (a mood whose cycle position is known)
MIN_DISTINCT_LEVELS = 2
# Forward-in-time validation: her days in date order; the later half is cut into at most
# this many blocks, each scored by models trained on every day before it (as she is served:
# trained on her past, asked about her future).
FORWARD_MAX_FOLDS = 5
# Partial pooling: her evidence weighs n / (n + k) against the prior's (the population
# model, else the phase prior), n her days (in that phase, for the phase table) and k days
# of prior; forward validation picks k. 0 trusts her days alone.
POOLING_PRIOR_DAYS = (0, 5, 15, 45, 135)
# A model ships when its forward Brier score beats the prior's by more than this many
# standard errors (see ForwardScore.clearly_beats). Measured on the demo generator with
# `python -m planher evaluate`: without it, lucky variants ship and lose ~1 point of accuracy.
SHIP_MIN_GAIN_SE = 1.0
MODEL_SIGNATURE_SALT = "planher.energy-model"
# The features and shape of a stored model. Bump it whenever energy_features or what
# fit_pooled stores changes: a stored model of another format is retrained, never fed rows
# it does not expect.
MODEL_FORMAT = 2
MAX_ANSWERS_PER_MODEL = 5_000  # memoized feature rows (the population model sees many)
# Energy follows the phase, a low-dimensional signal, and a woman has 10 to a few hundred
# labelled days: shallow, well-populated trees and small, regularized networks generalize
# best here (and stay small: every cached model costs memory, see docs/predictions.md).
RANDOM_FOREST_PARAMS = {
    "n_estimators": 50,
    "max_depth": 3,
    "min_samples_leaf": 5,
    "random_state": 0,
}
HIST_GRADIENT_BOOSTING_PARAMS = {
    "max_iter": 50,
    "max_depth": 2,
    "min_samples_leaf": 8,
    "learning_rate": 0.05,
    "random_state": 0,
}
LOGISTIC_REGRESSION_PARAMS = {"C": 1.0, "max_iter": 1_000}  # multinomial (lbfgs)
MLP_PARAMS = {
    "hidden_layer_sizes": (8,),
    "alpha": 1.0,
    "solver": "lbfgs",
    "max_iter": 100,
    "random_state": 0,
}
# A small network stopped at max_iter is not a failure: forward validation judges it.
warnings.filterwarnings("ignore", category=ConvergenceWarning)


def days_missing_for_a_model(levels: Sequence[int], min_days: int = PERSONAL_MIN_DAYS) -> int:
    """How many more labelled days are needed before a model can train (0: enough). One
    more day is needed if every day so far has the same level."""
    if len(levels) >= min_days and len(set(levels)) >= MIN_DISTINCT_LEVELS:
        return 0
    return max(min_days - len(levels), 1)


def forward_splits(n_samples: int) -> list[tuple[int, int]]:
    """Forward-in-time folds over days in date order, as (train_end, test_end): each block
    of the later half is scored by a model trained on every day before it."""
    first_test = (n_samples + 1) // 2
    blocks = min(FORWARD_MAX_FOLDS, n_samples - first_test)
    edges = [first_test + round(i * (n_samples - first_test) / blocks) for i in range(blocks + 1)]
    return list(itertools.pairwise(edges))


def model_candidates() -> dict[str, Any]:
    """The estimators that compete for her model (besides partial_pooling, the phase table
    of her own days shrunk toward the prior). Scale-sensitive ones see standardized rows."""
    return {
        "random_forest": RandomForestClassifier(**RANDOM_FOREST_PARAMS),
        "hist_gradient_boosting": HistGradientBoostingClassifier(**HIST_GRADIENT_BOOSTING_PARAMS),
        "logistic_regression": make_pipeline(
            StandardScaler(), LogisticRegression(**LOGISTIC_REGRESSION_PARAMS)
        ),
        "mlp": make_pipeline(StandardScaler(), MLPClassifier(**MLP_PARAMS)),
    }


def one_hot(levels: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.eye(len(ENERGY_LABELS))[np.asarray(levels, dtype=int)]


def level_probabilities(estimator: Any, rows: np.ndarray) -> np.ndarray:
    """predict_proba with a column for every level (0 for a level she never logged)."""
    probabilities = np.zeros((len(rows), len(ENERGY_LABELS)))
    probabilities[:, estimator.classes_.astype(int)] = estimator.predict_proba(rows)
    return probabilities


def pooled_phase_table(
    phases: Sequence[str | None],
    levels: Sequence[int],
    prior: Mapping[str | None, Sequence[float]],
    prior_days: float,
) -> dict[str | None, tuple[float, ...]]:
    """P(level | phase): her days in each phase with `prior_days` days of the prior's."""
    counts = {phase: np.zeros(len(ENERGY_LABELS)) for phase in prior}
    for phase, level in zip(phases, levels, strict=True):
        counts[phase][level] += 1
    table = {}
    for phase, expected in prior.items():
        days = counts[phase].sum() + prior_days
        pooled = (counts[phase] + prior_days * np.asarray(expected)) / days if days else expected
        table[phase] = tuple(np.asarray(pooled, dtype=float).tolist())
    return table


def pooled_probabilities(
    pooled: Mapping[str, Any], rows: Sequence[Sequence[float]], phases: Sequence[str | None]
) -> np.ndarray:
    """P(level) of a stored model: its estimator's answer weighed against its phase table
    (`estimator_weight` 0: the table alone). Stored as a plain dict of scikit-learn and
    numpy objects, so loading one never needs a class of ours."""
    table = np.asarray([pooled["phase_table"][phase] for phase in phases], dtype=float)
    if pooled["estimator"] is None:
        return table
    weight = pooled["estimator_weight"]
    estimated = level_probabilities(pooled["estimator"], np.asarray(rows, dtype=float))
    return weight * estimated + (1 - weight) * table


def evidence_weight(n_samples: int, prior_days: float) -> float:
    """Partial pooling: her n days against `prior_days` days of the prior."""
    return n_samples / (n_samples + prior_days) if n_samples + prior_days else 0.0


def fit_pooled(
    name: str,
    prior_days: float,
    rows: np.ndarray,
    phases: Sequence[str | None],
    levels: np.ndarray,
    prior: Mapping[str | None, Sequence[float]],
) -> dict[str, Any]:
    """One candidate fitted on these days and pooled with `prior_days` days of the prior.
    On days of a single level an estimator cannot fit: that level is all it knows."""
    if name == "partial_pooling":
        table = pooled_phase_table(phases, levels.tolist(), prior, prior_days)
        return {"estimator": None, "estimator_weight": 0.0, "phase_table": table}
    if len(set(levels.tolist())) < MIN_DISTINCT_LEVELS:
        estimator = DummyClassifier(strategy="most_frequent").fit(rows, levels)
    else:
        estimator = model_candidates()[name].fit(rows, levels)
    return {
        "estimator": estimator,
        "estimator_weight": evidence_weight(len(levels), prior_days),
        "phase_table": dict(prior),
    }


@dataclasses.dataclass(frozen=True)
class ForwardScore:
    """How a forecast did, day by day, on the days forward validation scored."""

    hits: np.ndarray  # whether its likeliest level was hers
    losses: np.ndarray  # Σ over levels of (p − outcome)²: 0 sure and right, 2 sure and wrong

    @classmethod
    def of(cls, probabilities: np.ndarray, levels: np.ndarray) -> ForwardScore:
        return cls(
            hits=probabilities.argmax(axis=1) == levels,
            losses=((probabilities - one_hot(levels)) ** 2).sum(axis=1),
        )

    @property
    def accuracy(self) -> float:
        return float(self.hits.mean())

    @property
    def brier_score(self) -> float:
        return float(self.losses.mean())

    def clearly_beats(self, other: ForwardScore) -> bool:
        """A lower Brier score than `other` on the same days by more than
        SHIP_MIN_GAIN_SE standard errors of their day-by-day difference: picked as the best
        of many variants, a model wins small margins by luck alone."""
        differences = self.losses - other.losses
        standard_error = differences.std(ddof=1) / math.sqrt(len(differences))
        return float(differences.mean()) < -SHIP_MIN_GAIN_SE * standard_error


def forward_validation(
    rows: np.ndarray,
    phases: Sequence[str | None],
    levels: np.ndarray,
    prior: Mapping[str | None, Sequence[float]],
) -> dict[tuple[str, float | None], ForwardScore]:
    """Each (candidate, prior days) scored on the forward folds; `majority` (her most
    common level so far) and `prior` (the prior alone) beside them."""
    forecasts = collections.defaultdict(list)
    prior_rows = np.asarray([prior[phase] for phase in phases], dtype=float)
    scored = []
    for train_end, test_end in forward_splits(len(levels)):
        train, test = slice(0, train_end), slice(train_end, test_end)
        training = (rows[train], phases[train], levels[train], prior)
        scored.append(levels[test])
        majority = collections.Counter(levels[train].tolist()).most_common(1)[0][0]
        forecasts["majority", None].append(one_hot([majority] * (test_end - train_end)))
        forecasts["prior", None].append(prior_rows[test])
        for name in ("partial_pooling", *model_candidates()):
            # An estimator is fitted once; its pooled variants only weigh its answers.
            alone = None
            if name != "partial_pooling":
                fitted = fit_pooled(name, 0.0, *training)
                alone = pooled_probabilities(fitted, rows[test], phases[test])
            for prior_days in POOLING_PRIOR_DAYS:
                if alone is None:  # a phase table: refitting it is counting
                    fitted = fit_pooled(name, prior_days, *training)
                    probabilities = pooled_probabilities(fitted, rows[test], phases[test])
                else:
                    weight = evidence_weight(train_end, prior_days)
                    probabilities = weight * alone + (1 - weight) * prior_rows[test]
                forecasts[name, prior_days].append(probabilities)
    outcomes = np.concatenate(scored)
    return {
        variant: ForwardScore.of(np.concatenate(parts), outcomes)
        for variant, parts in forecasts.items()
    }


@dataclasses.dataclass
class TrainingResult:
    model_type: str
    shipped: bool
    cv_accuracy: float  # forward-in-time, as every figure here
    baseline_accuracy: float  # always her most common level so far
    brier_score: float
    prior_days: float  # how many days of the prior her evidence was pooled with
    n_samples: int
    candidates: list[dict[str, Any]]
    pooled: dict[str, Any] | None  # fitted on every sample when shipped, else None


def train_energy_model(
    features: Sequence[Sequence[float]],
    phases: Sequence[str | None],
    levels: Sequence[int],
    prior: Mapping[str | None, Sequence[float]] = PHASE_PRIOR,
    prior_name: str = "phase_prior",
) -> TrainingResult:
    """Forward-validate every candidate at every pooling strength on her days in date
    order and pick the best calibrated (Brier score: accuracy alone is too coarse to choose
    among variants on a few dozen days). It ships only when it is right more often than
    her majority level and clearly beats the prior alone (`prior_name` says which prior
    that is). CPU-bound: call it in a worker thread."""
    rows, levels = np.asarray(features, dtype=float), np.asarray(levels, dtype=int)
    phases = np.asarray(phases, dtype=object)
    # One native thread: HistGradientBoosting would otherwise take every core (OpenMP) and
    # starve the event loop; trainings of different users already run side by side.
    with threadpool_limits(limits=1):
        scores = forward_validation(rows, phases, levels, prior)
        best_of: dict[str, tuple[str, float | None]] = {}
        for variant, score in scores.items():
            name = variant[0]
            if name not in best_of or score.brier_score < scores[best_of[name]].brier_score:
                best_of[name] = variant
        best = min(
            (variant for name, variant in best_of.items() if name not in ("majority", "prior")),
            key=lambda variant: scores[variant].brier_score,
        )
        winner, baseline = scores[best], scores["majority", None]
        shipped = winner.accuracy > baseline.accuracy and winner.clearly_beats(
            scores["prior", None]
        )
        pooled = fit_pooled(*best, rows, phases, levels, prior) if shipped else None
    return TrainingResult(
        model_type=best[0],
        shipped=shipped,
        cv_accuracy=round(winner.accuracy, 4),
        baseline_accuracy=round(baseline.accuracy, 4),
        brier_score=round(winner.brier_score, 4),
        prior_days=best[1],
        n_samples=len(levels),
        candidates=[
            {
                "type": prior_name if name == "prior" else name,
                "cv_accuracy": round(scores[variant].accuracy, 4),
                "brier_score": round(scores[variant].brier_score, 4),
            }
            for name, variant in best_of.items()
        ],
        pooled=pooled,
    )


def serialize_model(pooled: Mapping[str, Any], signer: itsdangerous.Signer) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(dict(pooled), buffer, compress=3)
    return signer.sign(buffer.getvalue())


def deserialize_model(blob: bytes, signer: itsdangerous.Signer) -> dict[str, Any]:
    """Loading a pickle runs code: only bytes that carry our own signature are loaded."""
    return joblib.load(io.BytesIO(signer.unsign(blob)))


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """What serves an energy prediction: a trained, pooled model, or the phase prior."""

    source: str  # personal | population | phase_prior
    pooled: Mapping[str, Any] | None = None  # what fit_pooled returned
    with_profile: bool = False
    version: int | None = None
    model_type: str = "phase_prior"
    trained_at: dt.datetime | None = None
    n_samples: int = 0
    cv_accuracy: float | None = None
    baseline_accuracy: float | None = None
    brier_score: float | None = None
    # A fitted model's output depends only on its features, and a woman's days repeat the
    # same few feature rows: each row's probabilities are computed once, then looked up.
    answers: dict[tuple[float, ...], tuple[float, ...]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def probabilities(
        self, rows: list[list[float]], phases: list[str | None]
    ) -> list[tuple[float, ...]]:
        """P(low, medium, high) for feature rows (and their phases, which the rows
        determine), asking the model once for the rows it has not answered yet."""
        keys = [tuple(row) for row in rows]
        unanswered = {key: phase for key, phase in zip(keys, phases, strict=True)}
        for key in self.answers.keys() & unanswered.keys():
            del unanswered[key]
        if unanswered:
            if len(self.answers) > MAX_ANSWERS_PER_MODEL:
                self.answers.clear()
            answered = pooled_probabilities(
                self.pooled, list(unanswered), list(unanswered.values())
            )
            for key, probabilities in zip(unanswered, answered.tolist(), strict=True):
                self.answers[key] = tuple(probabilities)
        return [self.answers[key] for key in keys]


PHASE_PRIOR_MODEL = EnergyModel(source="phase_prior")


def predict_energy(
    model: EnergyModel, cycles: Sequence[CycleDay | None], profile: Mapping | None
) -> list[tuple[tuple[float, ...], EnergyModel]]:
    """P(low, medium, high) for each day, with the model that gave it, in one batch. A day
    whose cycle position is unknown gets the phase prior."""
    known = [index for index, cycle in enumerate(cycles) if cycle is not None]
    results = [(PHASE_PRIOR[None], PHASE_PRIOR_MODEL)] * len(cycles)
    if model.pooled is None:
        for index in known:
            results[index] = (PHASE_PRIOR[cycles[index].phase], model)
        return results
    rows = [energy_features(cycles[index], profile, model.with_profile) for index in known]
    phases = [cycles[index].phase for index in known]
    for index, probabilities in zip(known, model.probabilities(rows, phases), strict=True):
        results[index] = (probabilities, model)
    return results


def phase_table_of(
    model: EnergyModel, samples: Sequence[tuple[CycleDay, Mapping | None, int]]
) -> dict[str | None, tuple[float, ...]]:
    """What `model` expects of her in each phase: its answers on her own days, averaged by
    phase (the phase prior for a phase she has no day in). Her personal model is pooled
    toward this. Asked directly, not through the model's memo: this runs in a worker thread
    while the event loop serves from the same cached model."""
    cycles = [cycle for cycle, _, _ in samples]
    rows = [energy_features(cycle, profile, model.with_profile) for cycle, profile, _ in samples]
    answers = pooled_probabilities(model.pooled, rows, [cycle.phase for cycle in cycles])
    by_phase = collections.defaultdict(list)
    for cycle, probabilities in zip(cycles, answers, strict=True):
        by_phase[cycle.phase].append(probabilities)
    return {
        phase: tuple(np.mean(by_phase[phase], axis=0).tolist()) if by_phase[phase] else prior
        for phase, prior in PHASE_PRIOR.items()
    }


def energy_json(probabilities: Sequence[float]) -> dict[str, Any]:
    rounded = [round(p, 3) for p in probabilities]
    level = max(range(3), key=lambda index: probabilities[index])
    rounded[level] = round(1 - sum(rounded) + rounded[level], 3)  # so they sum to 1
    return {
        "level": level,
        "label": ENERGY_LABELS[level],
        "confidence": rounded[level],
        "probabilities": dict(zip(ENERGY_LABELS, rounded, strict=True)),
    }


class ModelCache:
    """Loaded models by subject ('user:<id>', 'population'), least recently used first out.
    Each entry remembers its version, so a retrain elsewhere is noticed on the next lookup."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self._models: collections.OrderedDict[str, EnergyModel] = collections.OrderedDict()

    def get(self, subject: str, version: int) -> EnergyModel | None:
        model = self._models.get(subject)
        if model is None or model.version != version:
            return None
        self._models.move_to_end(subject)
        return model

    def put(self, subject: str, model: EnergyModel) -> None:
        self._models[subject] = model
        self._models.move_to_end(subject)
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)


def train_on_samples(
    samples: list, with_profile: bool, population: EnergyModel | None
) -> TrainingResult:
    """Features, then training, pooled toward what the population model expects of her
    (when there is one), else the phase prior: CPU work for a worker thread."""
    features = [energy_features(cycle, profile, with_profile) for cycle, profile, _ in samples]
    return train_energy_model(
        features,
        [cycle.phase for cycle, _, _ in samples],
        [level for _, _, level in samples],
        PHASE_PRIOR if population is None else phase_table_of(population, samples),
        "phase_prior" if population is None else "population",
    )
