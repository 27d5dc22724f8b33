"""Shared fixtures.

Every test module gets a database of its own: a SQLite file in a temp folder, or, when
DATABASE_URL names a PostgreSQL server, a fresh PostgreSQL database created on it for the
module and dropped afterwards. The app runs with its lifespan (migrations included) inside
Starlette's TestClient, which is an httpx client speaking ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planher.application import create_app
from planher.clock import utc_now, utc_today
from planher.config import DEFAULT_RATE_LIMITS, REFRESH_REUSE_GRACE_S, RateLimit, Settings
from planher.cycles.calendar import CycleCalendar, PeriodSpan
from planher.energy.demo import DEMO_ENERGY_BY_PHASE, generate_demo_history
from planher.storage.tables import logins

SERVER_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = SERVER_URL.startswith(("postgresql://", "postgres://"))
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TEST_SECRET_KEY = "planher-tests-secret-key"
PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parent.parent
# What a user is, to herself and to an admin: account fields, never health data.
ACCOUNT_FIELDS = {
    "id",
    "email",
    "name",
    "role",
    "time_zone",
    "retention_days",
    "created_at",
    "updated_at",
}
GENEROUS_LIMITS = {f"RATE_LIMIT_{name.upper()}": "100000/60" for name in DEFAULT_RATE_LIMITS}


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def temporary_postgres_database(server_url: str):
    """Create an empty database on the server for the duration of the block."""
    name = f"planher_test_{uuid.uuid4().hex[:12]}"
    asyncpg_url = server_url.replace("postgres://", "postgresql://", 1)

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(asyncpg_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(run(f'DROP DATABASE "{name}" WITH (FORCE)'))


def postgres_server_url() -> str:
    """The PostgreSQL server to test against; skips the test if none answers."""
    url = SERVER_URL if ON_POSTGRES else LOCAL_POSTGRES_URL

    async def ping() -> None:
        connection = await asyncpg.connect(
            url.replace("postgres://", "postgresql://", 1), timeout=3
        )
        await connection.close()

    try:
        asyncio.run(ping())
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        pytest.skip(f"no PostgreSQL server reachable at {url}: {error}")
    return url


PGBOUNCER_URL = os.environ.get("PGBOUNCER_URL", "postgresql://postgres@127.0.0.1:6432/test")


def through_pgbouncer(database_url: str) -> str:
    """The same PostgreSQL database reached through PgBouncer in transaction mode (started
    by .ci/run from .ci/pgbouncer.ini); skips the test if none answers, unless
    PLANHER_REQUIRE_PGBOUNCER is set (CI), where that fails it."""
    pooler = urlsplit(PGBOUNCER_URL)
    url = urlunsplit(urlsplit(database_url)._replace(netloc=pooler.netloc))

    async def ping() -> None:
        connection = await asyncpg.connect(url, timeout=3, statement_cache_size=0)
        await connection.close()

    try:
        asyncio.run(ping())
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        why = f"no PgBouncer reachable at {PGBOUNCER_URL}: {error}"
        if os.environ.get("PLANHER_REQUIRE_PGBOUNCER"):
            pytest.fail(why)
        pytest.skip(why)
    return url


@contextlib.contextmanager
def fresh_database_url(dialect: str, folder: Path):
    if dialect == "sqlite":
        yield f"sqlite:///{folder / f'planher-{uuid.uuid4().hex[:8]}.db'}"
    else:
        with temporary_postgres_database(postgres_server_url()) as url:
            yield url


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):
    with fresh_database_url(
        "postgresql" if ON_POSTGRES else "sqlite", tmp_path_factory.mktemp("db")
    ) as url:
        yield url


def make_settings(database_url: str, **changes) -> Settings:
    generous = RateLimit(100_000, 60)  # tests sign in far more often than people
    defaults = {
        "secret_keys": (TEST_SECRET_KEY,),
        "bcrypt_rounds": 4,
        "rate_limits": {name: generous for name in DEFAULT_RATE_LIMITS},
        "retrain_pause_s": 0,  # retrain as soon as enough changed, to see it happen
        "population_retrain_pause_s": 0,
        # Everyone's cycles are learned at start-up only: a test that compares two women's
        # forecasts must not see the population change between them. Tests that want it
        # learned call app.state.cycle_population.learn.
        "population_check_s": 10**9,
        # The whole suite can run through PgBouncer in transaction mode: DATABASE_URL at its
        # port and DB_STATEMENT_CACHE=false, as docs/operations.md says to run behind one.
        "db_statement_cache": os.environ.get("DB_STATEMENT_CACHE", "true") != "false",
    }
    return Settings(database_url=database_url, **{**defaults, **changes})


@pytest.fixture(scope="module")
def settings(database_url):
    return make_settings(database_url)


@pytest.fixture(scope="module")
def app(settings):
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


def run(client: TestClient, function, *args):
    """Run a coroutine function on the app's event loop (for direct database checks)."""
    return client.portal.call(function, *args)


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


@dataclasses.dataclass
class Account:
    email: str
    password: str
    user: dict
    tokens: dict

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.tokens["access_token"])


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict:
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def create_account(client: TestClient, password: str = PASSWORD) -> Account:
    email = new_email()
    response = client.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return Account(email, password, response.json(), login(client, email, password))


@pytest.fixture
def account(client) -> Account:
    return create_account(client)


def import_file(client: TestClient, account: Account, content: bytes, **params):
    """POST /users/me/import with `content` as the body, as a file of any format."""
    return client.post(
        "/users/me/import",
        headers={**account.headers, "Content-Type": "application/octet-stream"},
        params=params,
        content=content,
    )


def day(offset: int) -> str:
    """The ISO date `offset` days from the server's today (negative: the past)."""
    return (utc_today() + dt.timedelta(days=offset)).isoformat()


def log_generated_history(
    client: TestClient,
    account: Account,
    days: int,
    seed: int = 0,
    what=("periods", "moods"),
    energy_by_phase=DEMO_ENERGY_BY_PHASE,
) -> list:
    """Log `days` days of the demo generator's periods and energy (or only `what` of them)
    through the API, up to today. Returns the generated moods as (date, level)."""
    periods, moods = generate_demo_history(days, utc_today(), seed, energy_by_phase)
    for period in periods if "periods" in what else []:
        body = {"start_date": period.start.isoformat(), "end_date": period.end.isoformat()}
        response = client.post("/periods/", headers=account.headers, json=body)
        assert response.status_code == 201, response.text
    for date, level in moods if "moods" in what else []:
        response = client.post(
            "/moods/",
            headers=account.headers,
            json={"date": date.isoformat(), "energy_level": level},
        )
        assert response.status_code == 201, response.text
    return moods


def past_the_reuse_grace(client: TestClient, account: Account) -> None:
    """Move her logins' last refresh back beyond REFRESH_REUSE_GRACE_S."""
    long_ago = utc_now() - dt.timedelta(seconds=REFRESH_REUSE_GRACE_S + 1)
    run(
        client,
        client.app.state.database.execute,
        logins.update().where(logins.c.user_id == account.user["id"]).values(refreshed_at=long_ago),
    )


def drain_training(client: TestClient) -> None:
    """Wait for the background trainings that the last requests scheduled."""
    client.portal.call(client.app.state.trainer.drain)


# The pure-function tests count their dates from this one.
D = dt.date(2026, 3, 1)


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def calendar(*spans, profile=None, signs=()) -> CycleCalendar:
    """Her cycle calendar from (start, end) pairs, as the calculator builds it."""
    return CycleCalendar.build([PeriodSpan(start, end) for start, end in spans], profile, signs)


def planher_command(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m planher ARGUMENTS`, as a user runs it, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "planher", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def procfile_web_command() -> list[str]:
    """The Procfile's web command, as the tests' Python runs it."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    command = shlex.split(line.removeprefix("web:"))
    assert command[0] == "uvicorn"
    return [sys.executable, "-m", *command]


def wait_until_answering(url: str, process: subprocess.Popen, why_not) -> None:
    """Wait (up to a minute) for `url` to answer 200 while `process` lives; `why_not()`
    says what went wrong otherwise."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        assert process.poll() is None and time.monotonic() < deadline, why_not()
        time.sleep(0.1)


@contextlib.contextmanager
def uvicorn_server(
    database_url: str,
    log: Path,
    workers: int = 1,
    access_log: bool = False,
    port: int | None = None,
    **environment: str,
):
    """The Procfile's web process (as many workers as asked) serving planher:app on `port`
    (a free one if not given), with generous rate limits unless `environment` says
    otherwise, and its access log off unless asked; yields (base URL, the process)."""
    port = port or free_port()
    command = [argument.replace("${PORT:-8000}", str(port)) for argument in procfile_web_command()]
    logged_before = log.stat().st_size if log.exists() else 0
    with log.open("ab") as output:
        server = subprocess.Popen(
            [*command, "--workers", str(workers), *([] if access_log else ["--no-access-log"])],
            cwd=ROOT,
            env={
                **os.environ,
                **GENEROUS_LIMITS,
                "DATABASE_URL": database_url,
                "SECRET_KEYS": "server-test-key",
                "BCRYPT_ROUNDS": "4",
                **environment,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{base}/health", server, lambda: log.read_text())
        # One worker answering is not all of them: a signal must find every one started.
        deadline = time.monotonic() + 60
        while log.read_bytes()[logged_before:].count(b"Application startup complete") < workers:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield base, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
