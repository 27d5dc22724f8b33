"""The training queue in the database: web processes put trainings, workers take them.

With TRAINING=worker a web process never trains: it queues (`QueuedTraining`), and
`python -m planher worker` processes take the jobs one at a time. A job is one row per model
(asking again while it waits changes nothing), taken with FOR UPDATE SKIP LOCKED so two
workers never take the same one, and claimed with a heartbeat: the job of a worker that
was killed goes stale and another takes it over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import sqlalchemy as sa

from planher.clock import utc_now
from planher.energy.store import model_subject
from planher.storage.database import Database, background_task, first_row
from planher.storage.failures import DatabaseUnavailable, FailureLog
from planher.storage.tables import training_jobs

TRAINING_ATTEMPTS_MAX = 3  # a job whose training failed this often is dropped, with a log line


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    subject: str
    user_id: int | None
    force: bool
    requested_at: dt.datetime
    claimed_at: dt.datetime
    attempts: int


# Plain SQL with bound parameters: the upsert is spelled the same on SQLite and PostgreSQL.
# Asked again while it waits, a job keeps its place and remembers the latest request.
QUEUE_JOB = (
    "INSERT INTO training_jobs (subject, user_id, force, queued_at, requested_at, attempts) "
    "VALUES (:subject, :user_id, :force, :now, :now, 0) "
    "ON CONFLICT (subject) DO UPDATE SET requested_at = excluded.requested_at, "
    "force = training_jobs.force OR excluded.force"
)


def _claim_next_job(connection: sa.Connection, stale_before: dt.datetime) -> TrainingJob | None:
    oldest_free = (
        sa.select(training_jobs.c.subject)
        .where(
            sa.or_(training_jobs.c.claimed_at.is_(None), training_jobs.c.claimed_at < stale_before)
        )
        .order_by(training_jobs.c.queued_at)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's writes take turns anyway
    )
    subject = connection.execute(oldest_free).scalar()
    if subject is None:
        return None
    claimed = connection.execute(
        training_jobs.update()
        .where(training_jobs.c.subject == subject)
        .values(claimed_at=utc_now(), attempts=training_jobs.c.attempts + 1)
        .returning(
            training_jobs.c.subject,
            training_jobs.c.user_id,
            training_jobs.c.force,
            training_jobs.c.requested_at,
            training_jobs.c.claimed_at,
            training_jobs.c.attempts,
        )
    )
    return TrainingJob(**first_row(claimed))


def _finish_job(connection: sa.Connection, job: TrainingJob) -> None:
    """Done: the row goes, unless she asked again while it trained (then it waits again)."""
    gone = connection.execute(
        training_jobs.delete().where(
            training_jobs.c.subject == job.subject,
            training_jobs.c.requested_at == job.requested_at,
        )
    )
    if gone.rowcount == 0:
        connection.execute(
            training_jobs.update()
            .where(training_jobs.c.subject == job.subject)
            .values(claimed_at=None, attempts=0)
        )


def _fail_job(connection: sa.Connection, job: TrainingJob) -> bool:
    """Failed: free for another attempt, or dropped after TRAINING_ATTEMPTS_MAX; whether
    it was dropped."""
    mine = training_jobs.c.subject == job.subject
    if job.attempts >= TRAINING_ATTEMPTS_MAX:
        connection.execute(training_jobs.delete().where(mine))
        return True
    connection.execute(training_jobs.update().where(mine).values(claimed_at=None))
    return False


class TrainingQueue:
    """The queue's operations; `stale_s` is how long an unrenewed claim holds."""

    def __init__(self, database: Database, stale_s: float) -> None:
        self.database, self.stale_s = database, stale_s

    async def put(self, user_id: int | None, force: bool = False) -> None:
        await self.database.execute(
            sa.text(QUEUE_JOB).bindparams(
                subject=model_subject(user_id), user_id=user_id, force=force, now=utc_now()
            )
        )

    async def claim(self) -> TrainingJob | None:
        """The oldest job no live worker holds, now claimed by this one; None if none."""
        stale_before = utc_now() - dt.timedelta(seconds=self.stale_s)
        return await self.database.write(_claim_next_job, stale_before)

    async def renew(self, job: TrainingJob) -> None:
        await self.database.execute(
            training_jobs.update()
            .where(training_jobs.c.subject == job.subject)
            .values(claimed_at=utc_now())
        )

    async def finish(self, job: TrainingJob) -> None:
        await self.database.write(_finish_job, job)

    async def fail(self, job: TrainingJob) -> bool:
        return await self.database.write(_fail_job, job)

    async def length(self) -> int:
        return await self.database.fetch_val(sa.select(sa.func.count()).select_from(training_jobs))


class QueuedTraining:
    """What a web process trains with under TRAINING=worker: the Trainer's `schedule`,
    `is_busy` and `drain`, queueing instead of training."""

    def __init__(self, queue: TrainingQueue, failure_log: FailureLog) -> None:
        self.queue, self.failure_log = queue, failure_log
        self._putting: set[asyncio.Task] = set()

    def schedule(self, user_id: int | None, force: bool = False) -> None:
        task = background_task(self._put(user_id, force))
        self._putting.add(task)
        task.add_done_callback(self._putting.discard)

    async def _put(self, user_id: int | None, force: bool) -> None:
        try:
            await self.queue.put(user_id, force)
        except DatabaseUnavailable as error:
            self.failure_log.record(error)  # her next change of a mood queues it again

    def is_busy(self, user_id: int | None) -> bool:
        """Always: a web process under TRAINING=worker hands every training to a worker."""
        return True

    async def drain(self) -> None:
        while self._putting:
            await asyncio.gather(*list(self._putting), return_exceptions=True)
