"""Load benchmark: PlanHer beside a bare Starlette JSON endpoint (the ceiling), in one run.

Not part of the pytest run. Needs `wrk` (Debian: `apt-get install wrk`). Usage:

    .venv/bin/python tests/bench.py [--duration 10] [--connections 64] [--users 10000]

It builds a fresh database (a SQLite file, or a new database on the PostgreSQL server that
DATABASE_URL names), seeds `--users` women with `--moods-per-user` days each (1M moods by
default) and periods, starts uvicorn on 127.0.0.1 (1 worker, then 2 for writes), drives each
endpoint with wrk for `--duration` seconds and prints requests/s, p50/p99 latency and the
ratio to the ceiling, plus the event loop's responsiveness during a login storm and during
retrains, the model cache's memory, and list latency at 10k vs 1M moods. The abuse limits
are lifted for the run: one user drives all the load.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import bcrypt
import itsdangerous
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conftest import (  # noqa: E402
    free_port,
    procfile_web_command,
    temporary_postgres_database,
    through_pgbouncer,
)
from planher.application import with_app  # noqa: E402
from planher.clock import utc_now, utc_today  # noqa: E402
from planher.config import (  # noqa: E402
    BCRYPT_ROUNDS,
    DEFAULT_RATE_LIMITS,
    EARLIEST_DATE,
    SQLITE_PRAGMAS,
    Settings,
)
from planher.energy.demo import DEMO_CONTRARY_ENERGY_BY_PHASE, generate_demo_history  # noqa: E402
from planher.energy.models import (  # noqa: E402
    MODEL_SIGNATURE_SALT,
    EnergyModel,
    ModelCache,
    deserialize_model,
    serialize_model,
    train_on_samples,
)
from planher.energy.store import training_samples  # noqa: E402
from planher.energy.trainer import train_and_store  # noqa: E402
from planher.evaluation import demo_samples  # noqa: E402

PASSWORD = "benchmark passphrase"
SECRET = "benchmark-secret"
SMALL_USERS = 100  # the "10k moods" database: 100 users × 100 days
# Plain uvicorn, as the Procfile runs PlanHer (and the peer's virtualenv has no uvloop).
PLAIN_UVICORN = ("--loop", "asyncio", "--http", "h11")


async def ceiling_endpoint(request):
    return JSONResponse({"id": 1, "email": "ceiling@example.org", "role": "user"})


ceiling_app = Starlette(routes=[Route("/ceiling", ceiling_endpoint)])


# ── servers and requests ──


@contextlib.contextmanager
def server(
    app: str,
    environment: dict[str, str],
    workers: int = 1,
    options: Sequence[str] = PLAIN_UVICORN,
    python: str = sys.executable,
    app_dir: Path | None = None,
    started: list | None = None,
    log: Path | None = None,
):
    """uvicorn serving `app` on a free port; yields its base URL (and appends the process to
    `started`, when given). Its output goes to `log`, when given."""
    port = free_port()
    output = None if log is None else log.open("ab")
    process = subprocess.Popen(
        [
            python,
            "-m",
            "uvicorn",
            app,
            *options,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
            "--app-dir",
            str(app_dir or (ROOT / "tests" if app.startswith("bench:") else ROOT)),
        ],
        env=environment,
        cwd=ROOT,
        start_new_session=True,
        stdout=output,
        stderr=output,
    )
    if started is not None:
        started.append(process)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start")
            time.sleep(0.1)
        time.sleep(0.5 * workers)  # let every worker finish its startup
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        if output is not None:
            output.close()


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


def signed_in(base: str, email: str) -> dict[str, str]:
    """The Authorization header of a fresh login of `email` (password PASSWORD)."""
    tokens = call("POST", f"{base}/auth/login", {"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def retrain_when_idle(base: str, auth: dict) -> None:
    """POST /predictions/retrain, waiting out a background training that holds the claim."""
    for _ in range(300):
        try:
            call("POST", f"{base}/predictions/retrain", headers=auth)
            return
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise
            time.sleep(0.1)
    raise RuntimeError("the model stayed busy for 30 s")


def timed_ms(method: str, url: str, headers: dict) -> float:
    started = time.perf_counter()
    call(method, url, headers=headers)
    return (time.perf_counter() - started) * 1000


WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

POST_MOODS_SCRIPT = """
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) n = 0 end
function request()
  n = n + 1
  local day = os.date("!%Y-%m-%d", 1700000000 - (n * 4 + id) * 86400)
  return wrk.format("POST", "/moods/", {["Content-Type"] = "application/json",
    ["Authorization"] = "AUTH"}, '{"energy_level": 1, "date": "' .. day .. '"}')
end
"""
LOGIN_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = 'BODY'
"""


def wrk(
    url: str,
    duration_s: int,
    connections: int,
    headers: dict | None = None,
    script: str | None = None,
    threads: int = 2,
    script_arguments: Sequence[str] = (),
) -> dict:
    """`script` is Lua source, or the path of a .lua file; `script_arguments` follow `--`."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(Path(script).read_text() if script and script.endswith(".lua") else script or "")
    if script:
        command += ["-s", lua.name]
    if script_arguments:
        command += ["--", *script_arguments]
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(lua.name)
    latencies = {p: float(v) * UNIT_MS[u] for p, v, u in WRK_LATENCY.findall(output)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latencies.get("50", float("nan")),
        "p99_ms": latencies.get("99", float("nan")),
        "errors": (int(non_2xx.group(1)) if non_2xx else 0),
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


# ── the database ──


@contextlib.contextmanager
def fresh_database(workdir: Path, name: str = "bench"):
    """A SQLite file, or a new database on DATABASE_URL's PostgreSQL server (the tests' own
    helper), dropped afterwards."""
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{workdir / f'{name}.db'}"
        return
    with temporary_postgres_database(server_url) as url:
        yield url


def seed_rows(first_user: int, last_user: int, moods_per_user: int, password_hash: str):
    """Users `first_user..last_user`, each with `moods_per_user` days of energy and the
    periods around them, no profile."""
    now, today = utc_now(), utc_today()
    users, periods, moods = [], [], []
    for user_id in range(first_user, last_user + 1):
        users.append(
            (user_id, f"bench{user_id}@example.org", password_hash, None, "user", now, now)
        )
        if user_id == 1:  # the woman whose predictions are measured: a history of her own
            history, days = generate_demo_history(
                moods_per_user, today, seed=1, energy_by_phase=DEMO_CONTRARY_ENERGY_BY_PHASE
            )
            periods += [(user_id, p.start, p.end, None, now, now) for p in history]
            moods += [(user_id, day, level, None, None, now, now) for day, level in days]
            continue
        start = today - dt.timedelta(days=moods_per_user + user_id % 28)
        while start <= today:
            periods.append((user_id, start, start + dt.timedelta(days=4), None, now, now))
            start += dt.timedelta(days=28 + user_id % 3)
        for offset in range(moods_per_user):
            day = today - dt.timedelta(days=offset)
            moods.append((user_id, day, (user_id + offset) % 3, None, None, now, now))
    return users, periods, moods


USER_COLUMNS = ["id", "email", "password_hash", "name", "role", "created_at", "updated_at"]
PERIOD_COLUMNS = ["user_id", "start_date", "end_date", "notes", "created_at", "updated_at"]
MOOD_COLUMNS = [
    "user_id",
    "date",
    "energy_level",
    "day_of_cycle",
    "notes",
    "created_at",
    "updated_at",
]


def seed(
    database_url: str, first_user: int, last_user: int, moods_per_user: int, password_hash: str
):
    users, periods, moods = seed_rows(first_user, last_user, moods_per_user, password_hash)
    insert_rows(
        database_url,
        [
            ("users", USER_COLUMNS, users),
            ("period_records", PERIOD_COLUMNS, periods),
            ("daily_moods", MOOD_COLUMNS, moods),
        ],
    )


def insert_rows(database_url: str, tables: list[tuple[str, list[str], list[tuple]]]) -> None:
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            with db:
                for table, columns, rows in tables:
                    marks = ", ".join("?" * len(columns))
                    db.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                        [
                            [str(v) if isinstance(v, dt.datetime) else v for v in row]
                            for row in rows
                        ],
                    )
        return

    async def copy() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            for table, columns, rows in tables:
                await connection.copy_records_to_table(table, records=rows, columns=columns)
            await connection.execute(
                "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
            )
        finally:
            await connection.close()

    asyncio.run(copy())


def migrate(database_url: str) -> None:
    environment = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEYS": SECRET}
    subprocess.run(
        [sys.executable, "-m", "planher", "migrate"],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
    )


# ── side by side with the peer (../shared/bench/peer_app.py) ──

PEER_DIR = ROOT.parent / "shared" / "bench"
PEER_PYTHON = Path(os.environ.get("PEER_PYTHON", "/tmp/peer-venv/bin/python"))
PEER_PACKAGES = [
    "fastapi",
    "sqlalchemy[asyncio]",
    "aiosqlite",
    "asyncpg",
    "uvicorn",
    "itsdangerous",
]
PEER_USERS, PEER_MOODS = 201, 100
# The peer's README: user 1 and 19 others with 100 moods.


def peer_python() -> str:
    """The peer's own virtualenv, as its README makes it (created on first use)."""
    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_PYTHON.parent.parent)], check=True)
        subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return str(PEER_PYTHON)


def seed_peer_shape(database_url: str, password_hash: str) -> None:
    """PlanHer seeded like the peer: PEER_USERS users; user 1 and 19 others with PEER_MOODS
    daily moods and a period (no end logged) every 28 days."""
    now, today = utc_now(), utc_today()
    users, periods, moods = [], [], []
    for user_id in range(1, PEER_USERS + 1):
        users.append((user_id, f"u{user_id}@example.org", password_hash, None, "user", now, now))
        for k in range(PEER_MOODS // 28 + 1):
            start = today - dt.timedelta(days=28 * k + 3)
            periods.append((user_id, start, None, None, now, now))
        if user_id <= 20:
            moods += [
                (user_id, today - dt.timedelta(days=d), d % 3, None, None, now, now)
                for d in range(PEER_MOODS)
            ]
    insert_rows(
        database_url,
        [
            ("users", USER_COLUMNS, users),
            ("period_records", PERIOD_COLUMNS, periods),
            ("daily_moods", MOOD_COLUMNS, moods),
        ],
    )


@contextlib.contextmanager
def peer_database(workdir: Path, planher_url: str):
    """The peer's own database on the same engine as PlanHer's, as its driver URL."""
    if planher_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{workdir / 'peer.db'}"
        return
    with temporary_postgres_database(os.environ["DATABASE_URL"]) as url:
        yield url.replace("postgresql://", "postgresql+asyncpg://", 1)


WRITERS = 50  # the women posting moods in the write rounds, as in the figures
WRITE_SCRIPT = PEER_DIR / "write.lua"


def side_by_side(workdir: Path, url: str, environment: dict, seconds: int, connections: int):
    """PlanHer and the peer, same data shape, load and connections, interleaved over three
    rounds: GET /auth/me, GET /moods/?limit=30, and POST /moods/ as WRITERS women with a new
    date each request (the peer's write.lua on both); then PlanHer's home screen,
    GET /predictions/current, warm. Medians of req/s, and the tracebacks each server logged."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    seed_peer_shape(url, password_hash)
    python = peer_python()
    logs = {"planher": workdir / "planher.log", "peer": workdir / "peer.log"}
    with peer_database(workdir, url) as peer_url:
        peer_environment = {
            **os.environ,
            "PEER_DATABASE_URL": peer_url,
            "PEER_TOKENS_FILE": str(workdir / "peer-tokens.txt"),
        }
        seeded = subprocess.run(
            [python, "peer_app.py", str(PEER_USERS), str(PEER_MOODS)],
            cwd=PEER_DIR,
            env=peer_environment,
            capture_output=True,
            text=True,
            check=True,
        )
        auth = {"peer": {"Authorization": f"Bearer {seeded.stdout.strip().splitlines()[-1]}"}}
        writers = {"peer": workdir / "peer-writers.txt", "planher": workdir / "planher-writers.txt"}
        peer_tokens = (workdir / "peer-tokens.txt").read_text().splitlines()[:WRITERS]
        writers["peer"].write_text("\n".join(peer_tokens) + "\n")
        results: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
        with (
            server("planher:app", environment, options=PLAIN_UVICORN, log=logs["planher"]) as ours,
            server(
                "peer_app:app",
                peer_environment,
                options=PLAIN_UVICORN,
                python=python,
                app_dir=PEER_DIR,
                log=logs["peer"],
            ) as peer,
        ):
            bases = {"planher": ours, "peer": peer}
            auth["planher"] = signed_in(ours, "u1@example.org")
            planher_tokens = [
                signed_in(ours, f"u{k}@example.org")["Authorization"].removeprefix("Bearer ")
                for k in range(1, WRITERS + 1)
            ]
            writers["planher"].write_text("\n".join(planher_tokens) + "\n")
            call("GET", f"{ours}/predictions/current", headers=auth["planher"])  # warm
            for round_number in range(3):
                for name in ("peer", "planher"):
                    for path in ("/auth/me", "/moods/?limit=30"):
                        results[name, f"GET {path}"].append(
                            wrk(f"{bases[name]}{path}", seconds, connections, auth[name])
                        )
                    results[name, "POST /moods/"].append(
                        wrk(
                            f"{bases[name]}/moods/",
                            seconds,
                            connections,
                            script=str(WRITE_SCRIPT),
                            script_arguments=(str(writers[name]), str(round_number)),
                        )
                    )
                results["planher", "GET /predictions/current"].append(
                    wrk(f"{ours}/predictions/current", seconds, connections, auth["planher"])
                )
    medians = {key: median_result(runs) for key, runs in results.items()}
    tracebacks = {name: log.read_text().count("Traceback") for name, log in logs.items()}
    return medians, tracebacks


async def trips_per_request(url: str, requests: int = 200) -> dict[str, float]:
    """Per request of each hot endpoint, in-process: units of work handed to SQLite's
    writer thread, or PostgreSQL transactions (pg_stat_database.xact_commit, read once the
    app's connections have closed and flushed their counts; a run of no requests is the
    baseline subtracted)."""
    import httpx

    settings = Settings.from_environ(bench_environment(url))
    calls = {
        "GET /auth/me": lambda n: ("GET", "/auth/me", None),
        "GET /moods/?limit=30": lambda n: ("GET", "/moods/?limit=30", None),
        "POST /moods/": lambda n: (
            "POST",
            "/moods/",
            # Long before any date the wrk rounds post.
            {"date": str(dt.date(1950, 1, 1) + dt.timedelta(days=n)), "energy_level": n % 3},
        ),
        "GET /predictions/current": lambda n: ("GET", "/predictions/current", None),
    }

    async def run(endpoint: str | None) -> int:
        async def drive(app) -> int:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                login = {"email": "u1@example.org", "password": PASSWORD}
                token = (await http.post("/auth/login", json=login)).json()["access_token"]
                http.headers["Authorization"] = f"Bearer {token}"
                await http.get("/predictions/current")  # warm: what she was told is recorded
                hops_before = app.state.database.writer_hops
                for n in range(requests if endpoint else 0):
                    method, path, body = calls[endpoint](n)
                    response = await http.request(method, path, json=body)
                    assert response.status_code < 300, response.text
                return app.state.database.writer_hops - hops_before

        if not url.startswith("postgres"):
            return await with_app(settings, drive)
        committed_before = await transactions_committed(url)
        await with_app(settings, drive)
        await asyncio.sleep(0.5)
        return await transactions_committed(url) - committed_before

    baseline = await run(None)
    return {endpoint: (await run(endpoint) - baseline) / requests for endpoint in calls}


async def transactions_committed(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await connection.close()


def median_result(runs: list[dict]) -> dict:
    middle = sorted(runs, key=lambda result: result["rps"])[len(runs) // 2]
    return {**middle, "errors": sum(run["errors"] for run in runs)}


# ── writes: POST /moods/ beside a bare loop of the same INSERTs ──


def bare_insert_loop(url: str, seconds: float, first_user: int) -> float:
    """Single-row INSERTs into daily_moods, each its own transaction, with PlanHer's
    PRAGMAs (SQLite) or on one asyncpg connection: the database's own rate on this disk."""
    now = utc_now()
    if url.startswith("sqlite"):
        with contextlib.closing(
            sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        ) as db:
            for pragma in SQLITE_PRAGMAS:
                db.execute(pragma)
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                db.execute(
                    "INSERT INTO daily_moods (user_id, date, energy_level, created_at, updated_at) "
                    "VALUES (?, ?, 1, ?, ?)",
                    (
                        first_user,
                        str(dt.date(1990, 1, 1) + dt.timedelta(days=count)),
                        str(now),
                        str(now),
                    ),
                )
                count += 1
            return count / (time.perf_counter() - started)

    async def loop() -> float:
        connection = await asyncpg.connect(url)
        try:
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                await connection.execute(
                    "INSERT INTO daily_moods (user_id, date, energy_level, created_at, updated_at) "
                    "VALUES ($1, $2, 1, $3, $3)",
                    first_user,
                    dt.date(1990, 1, 1) + dt.timedelta(days=count),
                    now,
                )
                count += 1
            return count / (time.perf_counter() - started)
        finally:
            await connection.close()

    return asyncio.run(loop())


# ── the event loop while the population model trains ──


def loop_lag_during_population_training(url: str, users: int, moods_per_user: int) -> dict:
    """Seed `users` × `moods_per_user` moods, then train the population model inside the
    app's lifespan while a probe task measures how late the event loop wakes it (every
    millisecond). Returns the worst and 99th-percentile stalls in ms, and the time taken."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    seed(url, 1, users, moods_per_user, password_hash)
    settings = Settings(database_url=url, secret_keys=(SECRET,))

    async def train(app) -> dict:
        stalls: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                stalls.append((time.perf_counter() - started) * 1000 - 1)

        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        samples = await training_samples(app.state.database, None)
        await train_and_store(app, None, samples, utc_now())
        took = time.perf_counter() - started
        done.set()
        await prober
        stalls.sort()
        return {
            "worst_ms": stalls[-1],
            "p99_ms": stalls[int(len(stalls) * 0.99)],
            "seconds": took,
            "samples": len(samples),
        }

    return asyncio.run(with_app(settings, train))


# ── measurements that need no server ──


def bcrypt_ms(rounds: int = BCRYPT_ROUNDS) -> float:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds))
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def model_cache_megabytes(models: int) -> tuple[float, int]:
    """Memory of `models` loaded personal models (180 generated days each, of a woman unlike
    the phase prior, so one ships) in a ModelCache."""
    samples = demo_samples(180, utc_today(), 1, DEMO_CONTRARY_ENERGY_BY_PHASE)
    result = train_on_samples(samples, with_profile=False, population=None)
    signer = itsdangerous.Signer("k", salt=MODEL_SIGNATURE_SALT)
    blob = serialize_model(result.pooled, signer)
    cache = ModelCache(models)
    tracemalloc.start()
    for user in range(models):
        pooled = deserialize_model(blob, signer)
        cache.put(f"user:{user}", EnergyModel("personal", pooled, version=1))
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return used / 2**20, len(blob)


# ── the run ──


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--moods-per-user", type=int, default=100)
    parser.add_argument(
        "--part",
        choices=["all", "endpoints", "data-layer", "slow-clients", "import", "capacity"],
        default="all",
        help="endpoints: every hot endpoint at 1M moods; data-layer: beside the peer, "
        "writes beside a bare INSERT loop, event-loop stalls, uvicorn[standard]; "
        "slow-clients: /health while --tricklers connections trickle their headers or body; "
        "import: 10 years of history imported, and the memory of a --xml-mb MB export.xml; "
        "capacity (PostgreSQL): the hot paths per worker, direct and through PgBouncer",
    )
    parser.add_argument("--tricklers", type=int, default=500)
    parser.add_argument("--xml-mb", type=int, default=200, help="size of the Apple export.xml")
    arguments = parser.parse_args()
    if arguments.part not in ("slow-clients", "import") and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if arguments.part in ("all", "data-layer"):
        data_layer(arguments)
    if arguments.part in ("all", "endpoints"):
        endpoints(arguments)
    if arguments.part in ("all", "slow-clients"):
        slow_clients(arguments)
    if arguments.part in ("all", "import"):
        imports(arguments)
    if arguments.part in ("all", "capacity"):
        capacity(arguments)


def bench_environment(url: str) -> dict[str, str]:
    """The server's environment: this database, a fixed key, the abuse limits lifted."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEYS": SECRET,
        **{f"RATE_LIMIT_{name.upper()}": "100000000/60" for name in DEFAULT_RATE_LIMITS},
    }


def data_layer(arguments) -> None:
    seconds, connections = max(5, arguments.duration // 2), arguments.connections
    with tempfile.TemporaryDirectory(prefix="planher-bench-") as workdir:
        with fresh_database(Path(workdir)) as url:
            environment = bench_environment(url)
            migrate(url)
            with server("bench:ceiling_app", environment, options=PLAIN_UVICORN) as ceiling:
                ceiling_rps = wrk(f"{ceiling}/ceiling", seconds, connections)["rps"]
            side, tracebacks = side_by_side(Path(workdir), url, environment, seconds, connections)
            trips = asyncio.run(trips_per_request(url))
            bare_rps = bare_insert_loop(url, seconds, first_user=PEER_USERS)
            servers = {}
            standard = importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")
            for name, options in (
                ("uvicorn (asyncio, h11)", PLAIN_UVICORN),
                (
                    "uvicorn[standard] (uvloop, httptools)",
                    ["--loop", "uvloop", "--http", "httptools"],
                ),
            ):
                if "uvloop" in options and not standard:
                    print("uvloop or httptools missing: .venv/bin/pip install uvloop httptools")
                    continue
                with server("planher:app", environment, options=options) as base:
                    auth = signed_in(base, "u1@example.org")
                    servers[name] = [
                        wrk(f"{base}{path}", seconds, connections, auth)
                        for path in ("/auth/me", "/moods/?limit=30", "/predictions/current")
                    ]
        with fresh_database(Path(workdir), "loop-lag") as url:
            migrate(url)
            lag = loop_lag_during_population_training(url, 2_000, 100)
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    trip_kind = "transactions" if backend == "PostgreSQL" else "writer hops"
    print(
        f"\nThe data layer: {backend}, 1 uvicorn worker, wrk -t2 -c{connections} -d{seconds}s, "
        f"3 interleaved rounds, medians, {os.cpu_count()} cores; "
        f"bare Starlette ceiling {ceiling_rps:,.0f} req/s\n"
    )
    print(
        f"| endpoint | PlanHer req/s | peer req/s | PlanHer ÷ peer | PlanHer ÷ ceiling "
        f"| PlanHer p99 ms | peer p99 ms | errors (PlanHer, peer) | {trip_kind} per request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for endpoint in ("GET /auth/me", "GET /moods/?limit=30", "POST /moods/"):
        ours, peer = side["planher", endpoint], side["peer", endpoint]
        print(
            f"| {endpoint} | {ours['rps']:,.0f} | {peer['rps']:,.0f} | "
            f"{ours['rps'] / peer['rps']:.2f}× | {ours['rps'] / ceiling_rps:.3f} | "
            f"{ours['p99_ms']:.1f} | {peer['p99_ms']:.1f} | {ours['errors']}, {peer['errors']} | "
            f"{trips[endpoint]:.2f} |"
        )
    home = side["planher", "GET /predictions/current"]
    print(
        f"| GET /predictions/current (warm) | {home['rps']:,.0f} | — | — | "
        f"{home['rps'] / ceiling_rps:.3f} | {home['p99_ms']:.1f} | — | {home['errors']}, — | "
        f"{trips['GET /predictions/current']:.2f} |"
    )
    print(
        f"\n- tracebacks in the servers' logs during the rounds: PlanHer {tracebacks['planher']}, "
        f"peer {tracebacks['peer']}"
    )
    posted = side["planher", "POST /moods/"]["rps"]
    print(
        f"- a bare loop of the same INSERTs (one transaction each, same durability): "
        f"{bare_rps:,.0f}/s; POST /moods/ ÷ that loop: {posted / bare_rps:.2f}"
    )
    for name, (me, moods, home) in servers.items():
        print(
            f"- {name}: GET /auth/me {me['rps']:,.0f} req/s (p99 {me['p99_ms']:.1f} ms), "
            f"GET /moods/?limit=30 {moods['rps']:,.0f} req/s (p99 {moods['p99_ms']:.1f} ms), "
            f"GET /predictions/current {home['rps']:,.0f} req/s (p99 {home['p99_ms']:.1f} ms)"
        )
    print(
        f"- event loop while the population model trains on {2_000 * 100:,} moods "
        f"({lag['samples']:,} samples, {lag['seconds']:.1f} s): "
        f"worst stall {lag['worst_ms']:.1f} ms, p99 {lag['p99_ms']:.2f} ms"
    )


def endpoints(arguments) -> None:
    seconds, connections = arguments.duration, arguments.connections
    rows: list[tuple[str, dict]] = []
    notes: list[str] = []

    with (
        tempfile.TemporaryDirectory(prefix="planher-bench-") as workdir,
        fresh_database(Path(workdir)) as url,
    ):
        environment = bench_environment(url)
        migrate(url)
        password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
        seed(url, 1, SMALL_USERS, arguments.moods_per_user, password_hash)
        credentials = {"email": "bench1@example.org", "password": PASSWORD}

        with server("bench:ceiling_app", environment) as ceiling:
            rows.append(
                ("bare Starlette JSON (ceiling)", wrk(f"{ceiling}/ceiling", seconds, connections))
            )

        with server("planher:app", environment) as base:
            token = call("POST", f"{base}/auth/login", credentials)["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            small_list = wrk(f"{base}/moods/?limit=30", seconds, connections, auth)
        seed(url, SMALL_USERS + 1, arguments.users, arguments.moods_per_user, password_hash)
        total_moods = arguments.users * arguments.moods_per_user

        with server("planher:app", environment) as base:
            tokens = [
                call(
                    "POST",
                    f"{base}/auth/login",
                    {"email": f"bench{k}@example.org", "password": PASSWORD},
                )
                for k in (1, 2)
            ]
            auth = {"Authorization": f"Bearer {tokens[0]['access_token']}"}
            retrain_when_idle(base, auth)
            cold = []
            for _ in range(5):
                retrain_when_idle(base, auth)
                cold.append(timed_ms("GET", f"{base}/predictions/current", auth))
            warm = [timed_ms("GET", f"{base}/predictions/current", auth) for _ in range(50)]
            rows.append(("GET /auth/me", wrk(f"{base}/auth/me", seconds, connections, auth)))
            rows.append(
                (
                    f"GET /moods/?limit=30 ({total_moods:,} moods)",
                    wrk(f"{base}/moods/?limit=30", seconds, connections, auth),
                )
            )
            rows.append(
                (
                    "GET /predictions/current (warm)",
                    wrk(f"{base}/predictions/current", seconds, connections, auth),
                )
            )
            rows.append(
                (
                    "GET /predictions/forecast",
                    wrk(f"{base}/predictions/forecast", seconds, connections, auth),
                )
            )
            login_body = json.dumps(credentials)
            rows.append(
                (
                    "POST /auth/login",
                    wrk(
                        f"{base}/auth/login",
                        seconds,
                        16,
                        script=LOGIN_SCRIPT.replace("BODY", login_body),
                    ),
                )
            )

            storm = threading.Thread(
                target=wrk,
                args=(f"{base}/auth/login", seconds + 2, 16),
                kwargs={"script": LOGIN_SCRIPT.replace("BODY", login_body)},
            )
            storm.start()
            time.sleep(1)
            health_in_storm = wrk(f"{base}/health", seconds, 4, threads=1)
            storm.join()

            stop = threading.Event()

            def retrain_loop() -> None:
                while not stop.is_set():
                    retrain_when_idle(base, auth)

            retrainer = threading.Thread(target=retrain_loop)
            retrainer.start()
            health_in_retrains = wrk(f"{base}/health", seconds, 4, threads=1)
            stop.set()
            retrainer.join()

        with server("planher:app", environment, workers=2) as base:
            script = POST_MOODS_SCRIPT.replace("AUTH", f"Bearer {tokens[1]['access_token']}")
            rows.append(
                (
                    "POST /moods/ (2 workers)",
                    wrk(f"{base}/moods/", seconds, connections, script=script),
                )
            )
            rows.append(
                ("GET /auth/me (2 workers)", wrk(f"{base}/auth/me", seconds, connections, auth))
            )

    check_ms = bcrypt_ms()
    cache_mb, blob_bytes = model_cache_megabytes(500)
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    print(
        f"\nwrk -t2 -c{connections} -d{seconds}s (login: -c16), 1 uvicorn worker unless noted, "
        f"{backend}, {os.cpu_count()} cores\n"
    )
    print("| endpoint | req/s | ratio to ceiling | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    ceiling_rps = rows[0][1]["rps"]
    for name, result in rows:
        errors = f"{result['errors']} {result['socket_errors']}".strip()
        print(
            f"| {name} | {result['rps']:,.0f} | {result['rps'] / ceiling_rps:.3f} | "
            f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {errors} |"
        )
    login_rps = next(result["rps"] for name, result in rows if name == "POST /auth/login")
    bcrypt_limit = os.cpu_count() * 1000 / check_ms
    notes += [
        f"bcrypt cost {BCRYPT_ROUNDS}: {check_ms:.0f} ms a check, so {bcrypt_limit:.1f} "
        f"logins/s on {os.cpu_count()} cores; logins reached {login_rps:.1f}/s "
        f"({login_rps / bcrypt_limit:.0%} of that)",
        f"GET /health during a login storm: p50 {health_in_storm['p50_ms']:.1f} ms, "
        f"p99 {health_in_storm['p99_ms']:.1f} ms; during back-to-back retrains: "
        f"p50 {health_in_retrains['p50_ms']:.1f} ms, p99 {health_in_retrains['p99_ms']:.1f} ms",
        f"GET /predictions/current one at a time: cold (first after a retrain) "
        f"{statistics.median(cold):.1f} ms, warm {statistics.median(warm):.1f} ms (medians)",
        f"GET /moods/?limit=30 at {SMALL_USERS * arguments.moods_per_user:,} moods: p50 "
        f"{small_list['p50_ms']:.1f} ms, p99 {small_list['p99_ms']:.1f} ms, "
        f"{small_list['rps']:,.0f} req/s; "
        f"at {total_moods:,}: see the table",
        f"model cache: 500 loaded personal models take {cache_mb:.1f} MB "
        f"({cache_mb * 1024 / 500:.0f} KB each; {blob_bytes / 1024:.0f} KB stored)",
    ]
    print()
    for note in notes:
        print(f"- {note}")


# ── slow clients ──


def procfile_options() -> list[str]:
    """The Procfile's uvicorn options, but for the address it listens on."""
    command = procfile_web_command()
    options = command[command.index("planher:app") + 1 :]
    for flag in ("--host", "--port"):
        at = options.index(flag)
        del options[at : at + 2]
    return options


async def health_latencies_ms(base: str, count: int, interval_s: float) -> list[float]:
    """GET /health on a new connection each time, `count` times."""
    host, port = base.removeprefix("http://").split(":")
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        latencies.append((time.perf_counter() - started) * 1000)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        await asyncio.sleep(interval_s)
    return latencies


async def trickler(base: str, what: str, answers: collections.Counter, opened: asyncio.Event):
    """One connection that sends its request's headers (or, after them, its body) one byte
    a second; counts the status it is finally answered with."""
    host, port = base.removeprefix("http://").split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError as error:
        answers[f"connect failed: {error.__class__.__name__}"] += 1
        return
    opened.set()
    if what == "body":
        writer.write(
            b"POST /auth/login HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000\r\n\r\n"
        )
    else:
        writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\n")
    read = asyncio.ensure_future(reader.read())
    while not read.done():
        with contextlib.suppress(OSError):
            writer.write(b"a")
        await asyncio.wait([read], timeout=1)
    try:
        answer = read.result()
    except OSError:
        answer = b""  # reset: the server closed while bytes were still coming
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
    answers[status] += 1
    writer.close()


async def under_tricklers(base: str, what: str, tricklers: int) -> dict:
    answers: collections.Counter = collections.Counter()
    events = [asyncio.Event() for _ in range(tricklers)]
    started = time.monotonic()
    tasks = [asyncio.ensure_future(trickler(base, what, answers, e)) for e in events]
    await asyncio.wait([asyncio.ensure_future(e.wait()) for e in events], timeout=10)
    await asyncio.sleep(1)  # every trickler has sent bytes
    latencies = await health_latencies_ms(base, 100, 0.05)
    await asyncio.gather(*tasks)
    return {
        "latencies": latencies,
        "answers": dict(answers),
        "cut_after_s": time.monotonic() - started,
    }


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def slow_clients(arguments) -> None:
    options = procfile_options()
    with (
        tempfile.TemporaryDirectory(prefix="planher-bench-") as workdir,
        fresh_database(Path(workdir)) as url,
    ):
        started: list = []
        with server(
            "planher:app", bench_environment(url), options=options, started=started
        ) as base:
            idle = asyncio.run(health_latencies_ms(base, 100, 0.05))
            rss_before = rss_mib(started[0].pid)
            runs = {
                what: asyncio.run(under_tricklers(base, what, arguments.tricklers))
                for what in ("headers", "body")
            }
            rss_after = rss_mib(started[0].pid)

    def summary(latencies: list[float]) -> str:
        ordered = sorted(latencies)
        return (
            f"p50 {statistics.median(ordered):.1f} ms, p99 {ordered[98]:.1f} ms, "
            f"max {ordered[-1]:.1f} ms"
        )

    print(f"\nSlow clients: uvicorn {' '.join(options)}, 1 worker, {os.cpu_count()} cores")
    print(f"- GET /health, 100 requests on fresh connections, nothing else: {summary(idle)}")
    for what, run in runs.items():
        print(
            f"- GET /health while {arguments.tricklers} connections trickle their {what} "
            f"(one byte a second): {summary(run['latencies'])}; the tricklers were answered "
            f"{run['answers']} after {run['cut_after_s']:.1f} s"
        )
    print(f"- server memory (RSS) {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")


# ── imports: speed and memory ──


def ten_years_as_drip_csv() -> tuple[bytes, int, int]:
    """Ten years of daily history (the demo generator's) as drip writes it: newest first."""
    periods, moods = generate_demo_history(3650, utc_today(), seed=11)
    bleeding = {
        period.start + dt.timedelta(days=offset)
        for period in periods
        for offset in range((period.end - period.start).days + 1)
    }
    levels = dict(moods)
    lines = ["date,bleeding.value,bleeding.exclude,mood.energetic,mood.fatigue,note.value"]
    for date in sorted(bleeding | levels.keys(), reverse=True):
        level = levels.get(date)
        lines.append(
            f"{date},{'2' if date in bleeding else ''},{'false' if date in bleeding else ''},"
            f"{'true' if level in (1, 2) else 'false'},{'true' if level in (0, 1) else 'false'},"
            f"{'felt fine' if level == 1 else ''}"
        )
    return "\n".join(lines).encode(), len(periods), len(moods)


def apple_health_zip(path: Path, megabytes: int) -> tuple[int, int]:
    """An export.zip whose export.xml is `megabytes` MB: the phone's steps and heart rate
    every few minutes (what makes real exports big), and a period every 28 days."""
    step = (
        '<Record type="HKQuantityTypeIdentifierStepCount" sourceName="Phone" unit="count" '
        'creationDate="{d} 10:{m:02d}:00 +0100" startDate="{d} 10:{m:02d}:00 +0100" '
        'endDate="{d} 10:{m:02d}:59 +0100" value="{v}"/>\n'
    )
    flow = (
        '<Record type="HKCategoryTypeIdentifierMenstrualFlow" sourceName="Health" '
        'startDate="{d} 00:00:00 +0100" endDate="{d} 00:00:00 +0100" '
        'value="HKCategoryValueMenstrualFlowMedium">\n'
        '<MetadataEntry key="HKMenstrualCycleStart" value="{s}"/>\n</Record>\n'
    )
    day_bytes = len("".join(step.format(d="2000-01-01", m=m % 60, v=m * 7) for m in range(120)))
    days = megabytes * 1_000_000 // day_bytes + 1  # ending about today, none in the future
    day, written = utc_today() - dt.timedelta(days=days), 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("apple_health_export/export.xml", "w", force_zip64=True) as xml:
            xml.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<HealthData locale="en_US">\n')
            while written < megabytes * 1_000_000:
                chunk = "".join(step.format(d=day, m=m % 60, v=m * 7) for m in range(120))
                cycle_day = (day - EARLIEST_DATE).days % 28
                if cycle_day < 5:
                    chunk += flow.format(d=day, s=int(cycle_day == 0))
                data = chunk.encode()
                xml.write(data)
                written += len(data)
                day += dt.timedelta(days=1)
            xml.write(b"</HealthData>\n")
    return written, path.stat().st_size


def vm_high_water_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def timed_import(base: str, auth: dict, content: bytes) -> tuple[float, dict]:
    request = urllib.request.Request(
        f"{base}/users/me/import",
        method="POST",
        data=content,
        headers={"Content-Type": "application/octet-stream", **auth},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        report = json.loads(response.read())
    return time.perf_counter() - started, report


def imports(arguments) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="planher-bench-") as workdir,
        fresh_database(Path(workdir)) as url,
    ):
        csv_file, periods, moods = ten_years_as_drip_csv()
        export_zip = Path(workdir) / "export.zip"
        xml_bytes, zip_bytes = apple_health_zip(export_zip, arguments.xml_mb)
        with zipfile.ZipFile(export_zip) as archive:
            raw_xml = archive.read("apple_health_export/export.xml")
        started: list = []
        # A raw 200 MB export.xml is past the default IMPORT_MAX_BYTES (the zip is not).
        environment = {**bench_environment(url), "IMPORT_MAX_BYTES": str(len(raw_xml) + 1)}
        with server(
            "planher:app", environment, options=procfile_options(), started=started
        ) as base:
            pid = started[0].pid
            emails = ("ten-years", "apple", "export", "raw-xml")
            for email in (f"{name}@bench.example" for name in emails):
                call("POST", f"{base}/auth/register", {"email": email, "password": PASSWORD})
            drip_s, drip_report = timed_import(
                base, signed_in(base, "ten-years@bench.example"), csv_file
            )
            auth = signed_in(base, "ten-years@bench.example")
            export = urllib.request.urlopen(
                urllib.request.Request(f"{base}/users/me/export", headers=auth), timeout=120
            ).read()
            own_s, own_report = timed_import(base, signed_in(base, "export@bench.example"), export)
            before = rss_mib(pid)
            apple_s, apple_report = timed_import(
                base, signed_in(base, "apple@bench.example"), export_zip.read_bytes()
            )
            after = vm_high_water_mib(pid)
            raw_before = rss_mib(pid)
            raw_s, raw_report = timed_import(
                base, signed_in(base, "raw-xml@bench.example"), raw_xml
            )
            raw_after = vm_high_water_mib(pid)
    print(f"\nImports through HTTP (Procfile options, 1 worker, {os.cpu_count()} cores):")
    print(
        f"- drip CSV of 10 years ({len(csv_file) / 1e3:.0f} KB; {periods} periods, {moods} "
        f"days of energy): {drip_s:.2f} s; imported {drip_report['periods']['count']} periods, "
        f"{drip_report['moods']['count']} moods"
    )
    print(
        f"- the same history as PlanHer's own export ({len(export) / 1e6:.1f} MB): "
        f"{own_s:.2f} s; imported {own_report['periods']['count']} periods, "
        f"{own_report['moods']['count']} moods"
    )
    print(
        f"- Apple Health export.zip ({zip_bytes / 1e6:.1f} MB; export.xml {xml_bytes / 1e6:.0f} "
        f"MB): {apple_s:.1f} s; imported {apple_report['periods']['count']} periods; server "
        f"memory {before:.0f} MiB (RSS) before it, peak {after:.0f} MiB (VmHWM) after it: at "
        f"most +{after - before:.0f} MiB for the import"
    )
    print(
        f"- the same export.xml sent raw ({len(raw_xml) / 1e6:.0f} MB, IMPORT_MAX_BYTES raised "
        f"for it): {raw_s:.1f} s; imported {raw_report['periods']['count']} periods; memory "
        f"{raw_before:.0f} MiB before, peak {raw_after:.0f} MiB after: at most "
        f"+{raw_after - raw_before:.0f} MiB"
    )


# ── capacity: what one worker serves, directly and through a pooler ──

CAPACITY_PATHS = (
    "GET /auth/me",
    "GET /moods/?limit=30",
    "GET /predictions/current",
    "POST /moods/",
)


def capacity(arguments) -> None:
    """Requests per second of the hot paths for 1 and 2 workers on PostgreSQL directly, for
    1 worker with the statement caches off (what a transaction-mode pooler needs) and for 1
    worker through PgBouncer with them off: the figures of docs/operations.md's capacity
    section."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("capacity: set DATABASE_URL to a PostgreSQL server (and run PgBouncer, .ci/run)")
        return
    seconds, connections = arguments.duration, arguments.connections
    with tempfile.TemporaryDirectory(prefix="planher-bench-") as workdir:
        with fresh_database(Path(workdir)) as url:
            migrate(url)
            password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
            seed(url, 1, SMALL_USERS, arguments.moods_per_user, password_hash.decode())
            setups = {
                "direct, 1 worker": (bench_environment(url), 1),
                "direct, 2 workers": (bench_environment(url), 2),
                "direct, caches off, 1 worker": (
                    {**bench_environment(url), "DB_STATEMENT_CACHE": "false"},
                    1,
                ),
                "PgBouncer, 1 worker": (
                    {**bench_environment(through_pgbouncer(url)), "DB_STATEMENT_CACHE": "false"},
                    1,
                ),
            }
            results: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
            for _ in range(3):  # interleaved rounds: the machine's drift hits every setup
                for name, (environment, workers) in setups.items():
                    with server(
                        "planher:app", environment, workers=workers, options=procfile_options()
                    ) as base:
                        auth = signed_in(base, "bench1@example.org")
                        for path in CAPACITY_PATHS:
                            method, _, target = path.partition(" ")
                            script = (
                                POST_MOODS_SCRIPT.replace("AUTH", auth["Authorization"])
                                if method == "POST"
                                else None
                            )
                            results[name, path].append(
                                wrk(f"{base}{target}", seconds, connections, auth, script)
                            )
    print(
        f"\nCapacity on PostgreSQL (wrk -t2 -c{connections} -d{seconds}s, median of 3 "
        f"interleaved rounds, {os.cpu_count()} cores, the load generator on the same cores)\n"
    )
    print("| path | " + " | ".join(f"{name} req/s" for name in setups) + " | PgBouncer ÷ direct |")
    print("|---|" + "---:|" * (len(setups) + 1))
    for path in CAPACITY_PATHS:
        rates = {name: median_result(results[name, path])["rps"] for name in setups}
        cost = rates["PgBouncer, 1 worker"] / rates["direct, 1 worker"]
        print(
            f"| {path} | "
            + " | ".join(f"{rate:,.0f}" for rate in rates.values())
            + f" | {cost:.2f} |"
        )


if __name__ == "__main__":
    main()
