"""The training queue: one job per model, taken by one worker at a time, given back or
taken over, never lost."""

import asyncio
import datetime as dt

import sqlalchemy as sa

from conftest import create_account, run
from planher.clock import utc_now
from planher.energy.training_queue import TRAINING_ATTEMPTS_MAX, TrainingQueue
from planher.storage.tables import training_jobs


def queue_of(client, stale_s: float = 30) -> TrainingQueue:
    return TrainingQueue(client.app.state.database, stale_s)


def empty_the_queue(client) -> None:
    run(client, client.app.state.database.execute, training_jobs.delete())


def test_asking_again_while_a_job_waits_keeps_one_job_and_remembers_force(client):
    empty_the_queue(client)
    queue, her = queue_of(client), create_account(client).user["id"]
    run(client, queue.put, her)
    run(client, queue.put, her, True)
    run(client, queue.put, her)
    job = run(client, queue.claim)
    assert run(client, queue.length) == 1
    assert (job.user_id, job.force, job.attempts) == (her, True, 1)
    assert run(client, queue.claim) is None  # claimed: no one else takes it


def test_two_workers_claiming_at_once_take_different_jobs(client):
    empty_the_queue(client)
    queue = queue_of(client)
    for _ in range(2):
        run(client, queue.put, create_account(client).user["id"])

    async def two_at_once():
        return await asyncio.gather(queue.claim(), queue.claim())

    first, second = run(client, two_at_once)
    assert first is not None and second is not None and first.subject != second.subject


def test_a_job_asked_for_again_while_it_trains_waits_again_once_finished(client):
    empty_the_queue(client)
    queue, her = queue_of(client), create_account(client).user["id"]
    run(client, queue.put, her)
    job = run(client, queue.claim)
    run(client, queue.put, her)  # a mood logged during the training
    run(client, queue.finish, job)
    again = run(client, queue.claim)
    run(client, queue.finish, again)
    assert again is not None and again.subject == job.subject
    assert run(client, queue.length) == 0


def test_a_claim_not_renewed_is_taken_over_and_a_renewed_one_is_not(client):
    empty_the_queue(client)
    queue, her = queue_of(client, stale_s=30), create_account(client).user["id"]
    run(client, queue.put, her)
    job = run(client, queue.claim)
    run(client, queue.renew, job)
    held = run(client, queue.claim)
    long_ago = utc_now() - dt.timedelta(seconds=31)
    run(
        client,
        client.app.state.database.execute,
        training_jobs.update().values(claimed_at=long_ago),  # its worker was killed
    )
    taken_over = run(client, queue.claim)
    assert held is None
    assert taken_over is not None and taken_over.subject == job.subject
    assert taken_over.attempts == 2


def test_a_job_that_keeps_failing_is_dropped_after_its_attempts(client):
    empty_the_queue(client)
    queue, her = queue_of(client), create_account(client).user["id"]
    run(client, queue.put, her)
    dropped = []
    for _ in range(TRAINING_ATTEMPTS_MAX):
        dropped.append(run(client, queue.fail, run(client, queue.claim)))
    assert dropped == [False] * (TRAINING_ATTEMPTS_MAX - 1) + [True]
    assert run(client, queue.length) == 0


def test_her_jobs_go_with_her_account(client):
    empty_the_queue(client)
    queue, account = queue_of(client), create_account(client)
    run(client, queue.put, account.user["id"])
    assert client.delete("/users/me", headers=account.headers).status_code == 204
    count = sa.select(sa.func.count()).select_from(training_jobs)
    assert run(client, client.app.state.database.fetch_val, count) == 0
