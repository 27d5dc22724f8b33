"""`python -m planher worker` beside web processes under TRAINING=worker: the web processes
queue and never train; a worker killed mid-training loses nothing, another takes it over."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa

from conftest import (
    ON_POSTGRES,
    ROOT,
    Account,
    create_account,
    fresh_database_url,
    log_generated_history,
    make_settings,
    uvicorn_server,
)
from planher.storage.database import with_database
from planher.storage.tables import training_jobs, user_models

STALE_S = 2  # the workers' TRAINING_CLAIM_STALE_S: a killed worker's job is free this soon


def query(database_url: str, statement) -> list[dict]:
    return asyncio.run(
        with_database(make_settings(database_url), lambda database: database.fetch_all(statement))
    )


@contextlib.contextmanager
def worker(database_url: str, log):
    """`python -m planher worker`, as the Procfile's worker line runs it."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "planher", "worker"],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": database_url,
                "SECRET_KEYS": "server-test-key",  # uvicorn_server's: the models they sign
                "TRAINING_CLAIM_STALE_S": str(STALE_S),
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def wait_for(what, seconds: float, why: str):
    deadline = time.monotonic() + seconds
    while not (found := what()):
        assert time.monotonic() < deadline, why
        time.sleep(0.02)
    return found


@pytest.fixture
def database_for_workers(tmp_path):
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url:
        yield url


def her_job(url: str, her: int) -> list[dict]:
    return query(url, sa.select(training_jobs).where(training_jobs.c.user_id == her))


def her_models(url: str, her: int) -> list[dict]:
    return query(url, sa.select(user_models.c.version).where(user_models.c.user_id == her))


def test_a_worker_killed_mid_training_loses_nothing(database_for_workers, tmp_path):
    url = database_for_workers
    with uvicorn_server(url, tmp_path / "web.log", TRAINING="worker") as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:
            account: Account = create_account(http)
            her = account.user["id"]
            log_generated_history(http, account, days=30)
            time.sleep(1)
            queued = her_job(url, her)
            retrain = http.post("/predictions/retrain", headers=account.headers)
            assert her_models(url, her) == [], "a web process under TRAINING=worker trained"
            with worker(url, tmp_path / "first-worker.log") as first:
                wait_for(
                    lambda: [job for job in her_job(url, her) if job["claimed_at"]],
                    30,
                    "the first worker never took her job",
                )
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            left_behind = her_job(url, her)
            untrained = her_models(url, her)
            with worker(url, tmp_path / "second-worker.log") as second:
                wait_for(
                    lambda: [job for job in her_job(url, her) if job["attempts"] == 2]
                    or her_models(url, her),
                    30,
                    "the second worker never took her job over",
                )
                started = time.monotonic()
                served_meanwhile = http.get("/auth/me", headers=account.headers)
                served_in_s = time.monotonic() - started
                versions = wait_for(
                    lambda: her_models(url, her), 60, "the second worker never trained her model"
                )
                wait_for(lambda: not her_job(url, her), 30, "her job stayed in the queue")
                prediction = http.get("/predictions/current", headers=account.headers)
                second.send_signal(signal.SIGTERM)
                stopped = second.wait(timeout=60)
    assert len(queued) == 1 and queued[0]["claimed_at"] is None
    assert retrain.status_code == 202 and retrain.json()["state"] == "queued"
    assert len(left_behind) == 1 and untrained == [], "killed before it finished"
    assert [row["version"] for row in versions] == [1]
    assert served_meanwhile.status_code == 200 and served_in_s < 1, "web serves while it trains"
    assert prediction.status_code == 200
    assert stopped == 0
    assert "worker: stopped" in (tmp_path / "second-worker.log").read_text()
