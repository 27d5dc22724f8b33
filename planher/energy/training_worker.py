"""`python -m planher worker`: trainings taken from the queue, one at a time, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.applications import Starlette

from planher.energy.store import model_kind
from planher.energy.trainer import (
    TrainingBusy,
    heartbeat_interval_s,
    renewed_every,
    retrain_if_due,
)
from planher.energy.training_queue import TrainingJob, TrainingQueue
from planher.metrics import TRAINING_FAILURES, TRAINING_QUEUE_LENGTH
from planher.storage.failures import DatabaseUnavailable

logger = logging.getLogger(__name__)

TRAINING_QUEUE_POLL_S = 1.0  # an idle worker looks for a job this often
DATABASE_RETRY_S = 5.0  # after the database failed to answer


async def train_one(app: Starlette, queue: TrainingQueue, job: TrainingJob) -> None:
    """Train what `job` asks, holding its claim; the job is finished, or freed for another
    attempt if the training failed. A personal model's training queues the population's."""
    try:
        async with renewed_every(heartbeat_interval_s(queue.stale_s), lambda: queue.renew(job)):
            await retrain_if_due(app, job.user_id, job.force)
    except TrainingBusy:
        # Someone holds the model's own claim (a web process's retrain, or a worker that
        # died mid-training): the job's claim, no longer renewed, lets it be tried again.
        return
    except DatabaseUnavailable:
        raise
    except Exception:
        TRAINING_FAILURES.labels(model=model_kind(job.user_id)).inc()
        dropped = await queue.fail(job)
        logger.exception(
            "training %s failed (attempt %d)%s",
            job.subject,
            job.attempts,
            "; dropped" if dropped else "",
        )
        return
    await queue.finish(job)
    if job.user_id is not None:
        await queue.put(None)


async def work_on_training_queue(app: Starlette, stop: asyncio.Event) -> None:
    """Take and train jobs until `stop` is set; a training under way is finished first."""
    settings = app.state.settings
    queue = TrainingQueue(app.state.database, settings.training_claim_stale_s)
    logger.info("worker: taking trainings from the queue")
    while not stop.is_set():
        pause = TRAINING_QUEUE_POLL_S
        try:
            TRAINING_QUEUE_LENGTH.set(await queue.length())
            job = await queue.claim()
            if job is not None:
                logger.info("worker: training %s", job.subject)
                await train_one(app, queue, job)
                continue
        except DatabaseUnavailable as error:
            app.state.failure_log.record(error)
            pause = DATABASE_RETRY_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
    logger.info("worker: stopped")
