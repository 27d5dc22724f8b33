"""Stored energy models: versions, signatures, the cache, and which model serves her."""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sklearn
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from planher.cycles.calendar import CycleCalendar, CycleDay, PeriodSpan
from planher.energy.features import mood_cycle_day
from planher.energy.models import MODEL_FORMAT, PHASE_PRIOR_MODEL, EnergyModel, deserialize_model
from planher.metrics import MODEL_CACHE
from planher.storage.database import Database
from planher.storage.queries import MODEL_METADATA_COLUMNS, fetch_profile, newest_model_row
from planher.storage.tables import daily_moods, period_records, user_models, user_profiles

logger = logging.getLogger(__name__)

POPULATION_MAX_SAMPLES = 20_000  # the most recent labelled days of all users


def model_subject(user_id: int | None) -> str:
    return "population" if user_id is None else f"user:{user_id}"


def model_kind(user_id: int | None) -> str:
    """Whose model: "population" or "personal" (its `source`, and its label in the metrics)."""
    return "population" if user_id is None else "personal"


def loadable(row: Mapping[str, Any]) -> bool:
    """Whether a stored model was saved by this scikit-learn for today's features; any
    other is retrained rather than loaded."""
    return row["sklearn_version"] == sklearn.__version__ and row["model_format"] == MODEL_FORMAT


async def shipped_model(app: Starlette, user_id: int | None) -> EnergyModel | None:
    """Her shipped personal model (user_id None: the population model), from the cache or
    loaded, or None. One cheap query checks the shipped version, so a model retrained by
    another worker replaces the cached one at once; only a new version is loaded."""
    row = await newest_model_row(app.state.database, user_id, shipped_only=True)
    return None if row is None else await model_of_row(app, user_id, row)


async def model_of_row(
    app: Starlette, user_id: int | None, row: Mapping[str, Any]
) -> EnergyModel | None:
    """The model a shipped row describes, from the cache or loaded; None if it cannot be."""
    database, cache = app.state.database, app.state.model_cache
    subject = model_subject(user_id)
    if not loadable(row):
        app.state.trainer.schedule(user_id)
        return None
    model = cache.get(subject, row["version"])
    MODEL_CACHE.labels(result="miss" if model is None else "hit").inc()
    if model is not None:
        return model
    blob = await database.fetch_val(
        sa.select(user_models.c.model_blob).where(user_models.c.id == row["id"])
    )
    try:
        pooled = await run_in_threadpool(deserialize_model, blob, app.state.model_signer)
    except Exception as error:  # a foreign or tampered blob is never unpickled
        logger.warning(
            "%s model version %s refused (%s); retraining it",
            subject,
            row["version"],
            type(error).__name__,
        )
        await database.execute(  # no instance tries it again
            user_models.update()
            .where(user_models.c.id == row["id"])
            .values(shipped=False, model_blob=None)
        )
        app.state.trainer.schedule(user_id, force=True)
        return None
    model = EnergyModel(
        source=model_kind(user_id),
        pooled=pooled,
        with_profile=user_id is None,
        version=row["version"],
        model_type=row["model_type"],
        trained_at=row["trained_at"],
        n_samples=row["n_samples"],
        cv_accuracy=row["cv_accuracy"],
        baseline_accuracy=row["baseline_accuracy"],
        brier_score=row["brier_score"],
    )
    cache.put(subject, model)
    return model


async def active_model(app: Starlette, user_id: int) -> EnergyModel:
    """Her personal model if one is shipped, else the population model, else the phase
    prior. One query finds the first shipped one of the two (the home screen asks on every
    call); a personal model that cannot serve falls back to the population's."""
    row = await app.state.database.fetch_one(
        NEWEST_SHIPPED_OF_HERS_OR_EVERYONES, {"user_id": user_id}
    )
    if row is None:
        return PHASE_PRIOR_MODEL
    owner = row["user_id"]
    model = await model_of_row(app, owner, row)
    if model is None and owner is not None:
        model = await shipped_model(app, None)
    return model or PHASE_PRIOR_MODEL


NEWEST_SHIPPED_OF_HERS_OR_EVERYONES = (
    sa.select(*MODEL_METADATA_COLUMNS)
    .where(
        user_models.c.shipped.is_(True),
        sa.or_(user_models.c.user_id == sa.bindparam("user_id"), user_models.c.user_id.is_(None)),
    )
    .order_by(user_models.c.user_id.is_(None), user_models.c.version.desc())
    .limit(1)
)


async def training_samples(database: Database, user_id: int | None):
    """Her labelled days, or (user_id None) the most recent labelled days of everyone, as
    (cycle day, profile, level). The rows are fetched here; placing thousands of days in
    their cycles is CPU work, done in a worker thread."""
    mood_columns = [
        daily_moods.c.user_id,
        daily_moods.c.date,
        daily_moods.c.day_of_cycle,
        daily_moods.c.energy_level,
    ]
    period_columns = [
        period_records.c.user_id,
        period_records.c.start_date,
        period_records.c.end_date,
    ]
    if user_id is not None:
        moods = await database.fetch_large(
            sa.select(*mood_columns).where(daily_moods.c.user_id == user_id)
        )
        periods = await database.fetch_large(
            sa.select(*period_columns).where(period_records.c.user_id == user_id)
        )
        profile = await fetch_profile(database, user_id)
        profiles = {} if profile is None else {user_id: profile}
    else:
        moods = await database.fetch_large(
            sa.select(*mood_columns)
            .order_by(daily_moods.c.date.desc())
            .limit(POPULATION_MAX_SAMPLES)
        )
        periods = await database.fetch_large(sa.select(*period_columns))
        profiles = {
            row["user_id"]: row for row in await database.fetch_large(user_profiles.select())
        }
    return await run_in_threadpool(labelled_samples, moods, periods, profiles)


def labelled_samples(
    moods: Sequence[Mapping], periods: Sequence[Mapping], profiles: Mapping[int, Mapping]
) -> list[tuple[CycleDay, Mapping | None, int]]:
    """(cycle day, profile, level) of every mood whose cycle position is known, each placed
    in its owner's calendar, in date order (forward validation trains on the earlier)."""
    spans, owned = collections.defaultdict(list), collections.defaultdict(list)
    for row in periods:
        spans[row["user_id"]].append(PeriodSpan(row["start_date"], row["end_date"]))
    for mood in moods:
        owned[mood["user_id"]].append(mood)
    dated = []
    for owner, days in owned.items():
        calendar = CycleCalendar.build(spans[owner], profiles.get(owner))
        for mood in days:
            cycle = mood_cycle_day(calendar, mood["date"], mood["day_of_cycle"])
            if cycle is not None:
                dated.append((mood["date"], cycle, calendar.profile, mood["energy_level"]))
    dated.sort(key=lambda sample: sample[0])
    return [(cycle, profile, level) for _, cycle, profile, level in dated]
