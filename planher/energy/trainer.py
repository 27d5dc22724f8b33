"""Training off the request path: claims, retraining when enough changed, the trainer task."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sklearn
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from planher.clock import utc_now
from planher.config import TRAINING_CLAIM_STALE_S
from planher.energy.models import (
    MODEL_FORMAT,
    PERSONAL_MIN_DAYS,
    days_missing_for_a_model,
    serialize_model,
    train_on_samples,
)
from planher.energy.store import (
    loadable,
    model_kind,
    model_subject,
    shipped_model,
    training_samples,
)
from planher.metrics import TRAINING_DURATION, TRAINING_FAILURES, TRAINING_QUEUE_LENGTH
from planher.storage.database import Database, background_task, first_row
from planher.storage.failures import DatabaseUnavailable
from planher.storage.queries import (
    MODEL_METADATA_COLUMNS,
    changed_moods_since,
    newest_model_row,
    owner_condition,
)
from planher.storage.tables import model_training_claims, user_models

logger = logging.getLogger(__name__)

POPULATION_MIN_DAYS = 30  # labelled days of everyone before a population model is trained
RETRAIN_AFTER_CHANGED_MOODS = 5
POPULATION_RETRAIN_AFTER_CHANGED_MOODS = 25
BACKGROUND_TRAININGS_AT_ONCE = 1  # per process; the others wait their turn
# A trainer renews its claim this often (or three times per TRAINING_CLAIM_STALE_S, if that
# is set shorter), so a claim not renewed for TRAINING_CLAIM_STALE_S belongs to a process
# that died.
TRAINING_CLAIM_HEARTBEAT_S = 15


# Plain SQL with bound parameters: the upsert is spelled the same on SQLite and PostgreSQL.
CLAIM_TRAINING = (
    "INSERT INTO model_training_claims (subject, claimed_at) VALUES (:subject, :now) "
    "ON CONFLICT (subject) DO UPDATE SET claimed_at = excluded.claimed_at "
    "WHERE model_training_claims.claimed_at < :stale_before RETURNING subject"
)


def heartbeat_interval_s(stale_s: float) -> float:
    return min(TRAINING_CLAIM_HEARTBEAT_S, stale_s / 3)


@contextlib.asynccontextmanager
async def renewed_every(interval_s: float, renew: Callable[[], Awaitable[Any]]):
    """Calls `renew` every `interval_s` while the block runs."""

    async def keep_renewing() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await renew()

    heartbeat = background_task(keep_renewing())
    try:
        yield
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError, DatabaseUnavailable):
            await heartbeat


@contextlib.asynccontextmanager
async def training_claim(database: Database, subject: str, stale_s: float = TRAINING_CLAIM_STALE_S):
    """Yields whether this process may train `subject` now. The claim is a database row,
    so it holds across every app instance; its holder renews it, so the claim of a process
    that died is taken over `stale_s` after its last renewal."""
    now = utc_now()
    claimed = await database.fetch_one(
        sa.text(CLAIM_TRAINING).bindparams(
            subject=subject, now=now, stale_before=now - dt.timedelta(seconds=stale_s)
        )
    )
    if claimed is None:
        yield False
        return
    mine = model_training_claims.c.subject == subject

    async def renew_claim() -> None:
        await database.execute(
            model_training_claims.update().where(mine).values(claimed_at=utc_now())
        )

    try:
        async with renewed_every(heartbeat_interval_s(stale_s), renew_claim):
            yield True
    finally:
        await database.execute(model_training_claims.delete().where(mine))


class TrainingBusy(Exception):
    """Another request or instance is training this model right now."""


async def train_and_store(
    app: Starlette, user_id: int | None, samples: list, as_of: dt.datetime
) -> dict[str, Any]:
    """Train on `samples` (the data as of `as_of`) in a worker thread and store the result
    as the next version; moods changed after `as_of` count towards the next training."""
    database, stale_s = app.state.database, app.state.settings.training_claim_stale_s
    async with training_claim(database, model_subject(user_id), stale_s) as claimed:
        if not claimed:
            raise TrainingBusy()
        started = time.perf_counter()
        population = None if user_id is None else await shipped_model(app, None)
        result = await run_in_threadpool(train_on_samples, samples, user_id is None, population)
        blob = None
        if result.shipped:
            blob = await run_in_threadpool(serialize_model, result.pooled, app.state.model_signer)
        row = await database.write(
            store_model,
            user_id,
            {
                "model_type": result.model_type,
                "shipped": result.shipped,
                "cv_accuracy": result.cv_accuracy,
                "baseline_accuracy": result.baseline_accuracy,
                "brier_score": result.brier_score,
                "n_samples": result.n_samples,
                "candidates": json.dumps(result.candidates),
                "sklearn_version": sklearn.__version__,
                "model_format": MODEL_FORMAT,
                "model_blob": blob,
                "trained_at": as_of,
            },
        )
    TRAINING_DURATION.labels(model=model_kind(user_id)).observe(time.perf_counter() - started)
    logger.info(
        "trained %s model version %s: %s pooled with %s days of prior, shipped=%s",
        model_subject(user_id),
        row["version"],
        result.model_type,
        result.prior_days,
        result.shipped,
    )
    return row


def store_model(connection: sa.Connection, user_id: int | None, fields: dict) -> dict[str, Any]:
    """The model as her (or the population's) next version; its row without the blob."""
    newest = connection.execute(
        sa.select(sa.func.coalesce(sa.func.max(user_models.c.version), 0)).where(
            owner_condition(user_id)
        )
    ).scalar()
    stored = connection.execute(
        user_models.insert()
        .values(user_id=user_id, version=newest + 1, **fields)
        .returning(*MODEL_METADATA_COLUMNS)
    )
    return first_row(stored)


async def retrain_if_due(app: Starlette, user_id: int | None, force: bool = False) -> None:
    """Retrain when enough moods changed since the last training (her own model), or
    across everyone (the population model), or when `force`d, and there is enough data;
    TrainingBusy if another process holds the model's training claim."""
    database, personal = app.state.database, user_id is not None
    minimum = PERSONAL_MIN_DAYS if personal else POPULATION_MIN_DAYS
    last = await newest_model_row(database, user_id, shipped_only=False)
    if not force and last is not None and loadable(last):
        every = RETRAIN_AFTER_CHANGED_MOODS if personal else POPULATION_RETRAIN_AFTER_CHANGED_MOODS
        settings = app.state.settings
        pause_s = settings.retrain_pause_s if personal else settings.population_retrain_pause_s
        if utc_now() - last["trained_at"] < dt.timedelta(seconds=pause_s):
            return
        if await changed_moods_since(database, user_id, last["trained_at"]) < every:
            return
    elif not force and await changed_moods_since(database, user_id, None) < minimum:
        return  # too few days to train on: no need to read them
    as_of = utc_now()
    samples = await training_samples(database, user_id)
    if days_missing_for_a_model([level for *_, level in samples], minimum) == 0:
        await train_and_store(app, user_id, samples, as_of)


class Trainer:
    """Background training: at most one task per model in this process (and one across
    processes, by the claim row), never on the event loop, never delaying a response."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._running: dict[int | None, asyncio.Task] = {}
        self._asked_again: set[int | None] = set()
        self._forced: set[int | None] = set()
        # Trainings hold the GIL for long stretches: many at once starve the event loop.
        self._one_at_a_time = asyncio.Semaphore(BACKGROUND_TRAININGS_AT_ONCE)

    def schedule(self, user_id: int | None, force: bool = False) -> None:
        """Consider retraining her model (and then the population model) in the background;
        `force` retrains even if little changed (a model that could not be loaded). Asked
        while that is running, it looks again once the running pass is done."""
        if force:
            self._forced.add(user_id)
        if user_id in self._running:
            self._asked_again.add(user_id)
            return
        self._running[user_id] = background_task(self._retrain(user_id))
        TRAINING_QUEUE_LENGTH.set(len(self._running))

    async def _retrain(self, user_id: int | None) -> None:
        try:
            while True:
                self._asked_again.discard(user_id)
                force = user_id in self._forced
                self._forced.discard(user_id)
                async with self._one_at_a_time:
                    with contextlib.suppress(TrainingBusy):  # another process trains it
                        await retrain_if_due(self.app, user_id, force)
                if user_id is not None:
                    self.schedule(None)  # one population task per process, however many users
                if user_id not in self._asked_again:
                    break
        except DatabaseUnavailable as error:
            self.app.state.failure_log.record(error)  # the next change of a mood retries
        except Exception:
            TRAINING_FAILURES.labels(model=model_kind(user_id)).inc()
            logger.exception("background training of %s failed", model_subject(user_id))
        finally:
            self._running.pop(user_id, None)
            TRAINING_QUEUE_LENGTH.set(len(self._running))

    def is_busy(self, user_id: int | None) -> bool:
        """Whether a background pass over this model is under way in this process."""
        return user_id in self._running

    async def drain(self) -> None:
        """Wait for every scheduled training (at shutdown, and in tests)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
