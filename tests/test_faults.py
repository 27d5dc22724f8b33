"""Fault tests against real uvicorn processes on 127.0.0.1: a crash mid-load, two workers
under concurrent writers, and two users racing on the same ids. Bounded in time."""

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import planher
from conftest import ON_POSTGRES, PASSWORD, day, fresh_database_url

ROOT = Path(planher.__file__).parent
GENEROUS_LIMITS = {
    f"RATE_LIMIT_{name.upper()}": "100000/60" for name in planher.DEFAULT_RATE_LIMITS
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(database_url: str, log: Path, workers: int = 1):
    """A uvicorn process group serving planher:app; yields (base URL, the process)."""
    port = free_port()
    environment = {
        **os.environ,
        **GENEROUS_LIMITS,
        "DATABASE_URL": database_url,
        "SECRET_KEYS": "fault-test-key",
        "BCRYPT_ROUNDS": "4",
    }
    with log.open("ab") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "planher:app",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
            ],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def sign_up(http: httpx.Client, email: str) -> dict[str, str]:
    assert (
        http.post("/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    )
    tokens = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def all_mood_dates(http: httpx.Client, headers: dict) -> set[str]:
    dates, offset = set(), 0
    while True:
        page = http.get(f"/moods/?limit=1000&offset={offset}", headers=headers).json()
        dates |= {mood["date"] for mood in page}
        if len(page) < 1000:
            return dates
        offset += 1000


@pytest.fixture
def database_for_faults(tmp_path):
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url:
        yield url


def test_a_killed_server_keeps_every_acknowledged_write(database_for_faults, tmp_path):
    log = tmp_path / "server.log"
    acknowledged: list[str] = []
    with uvicorn_server(database_for_faults, log) as (base, server):
        with httpx.Client(base_url=base, timeout=10) as http:
            headers = sign_up(http, "crash@example.org")

        def writer(first_offset: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for offset in range(first_offset, first_offset - 2000, -8):
                    try:
                        response = http.post(
                            "/moods/",
                            headers=headers,
                            json={"date": day(offset), "energy_level": 1},
                        )
                    except httpx.HTTPError:
                        return  # the server is gone
                    if response.status_code == 201:
                        acknowledged.append(response.json()["date"])

        threads = [threading.Thread(target=writer, args=(-k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        os.killpg(server.pid, signal.SIGKILL)  # mid-load, no chance to clean up
        for thread in threads:
            thread.join(timeout=30)
    assert len(acknowledged) > 20, log.read_text()[-2000:]

    with uvicorn_server(database_for_faults, log) as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            tokens = http.post(
                "/auth/login", json={"email": "crash@example.org", "password": PASSWORD}
            ).json()
            stored = all_mood_dates(http, {"Authorization": f"Bearer {tokens['access_token']}"})
    assert set(acknowledged) <= stored
    if database_for_faults.startswith("sqlite"):
        with contextlib.closing(
            sqlite3.connect(database_for_faults.removeprefix("sqlite:///"))
        ) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_two_workers_take_fifty_concurrent_writers_without_errors(database_for_faults, tmp_path):
    log = tmp_path / "server.log"
    writers, moods_each = 50, 20
    with uvicorn_server(database_for_faults, log, workers=2) as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:
            accounts = [sign_up(http, f"writer{n}@example.org") for n in range(writers)]

        def write_moods(headers: dict) -> list[int]:
            with httpx.Client(base_url=base, timeout=60) as http:
                return [
                    http.post(
                        "/moods/", headers=headers, json={"date": day(-k), "energy_level": k % 3}
                    ).status_code
                    for k in range(moods_each)
                ]

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=writers) as pool:
            statuses = [status for result in pool.map(write_moods, accounts) for status in result]
        elapsed = time.monotonic() - started
        with httpx.Client(base_url=base, timeout=30) as http:
            counts = [len(all_mood_dates(http, headers)) for headers in accounts]
    print(f"\n{writers} writers × {moods_each} moods on 2 workers: {elapsed:.1f} s")
    assert statuses == [201] * (writers * moods_each)
    assert counts == [moods_each] * writers
    assert "database is locked" not in log.read_text()


def test_two_users_racing_on_the_same_ids_never_touch_each_others_data(
    database_for_faults, tmp_path
):
    with uvicorn_server(database_for_faults, tmp_path / "server.log", workers=2) as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:
            users = {name: sign_up(http, f"{name}@example.org") for name in ("ana", "bea")}

        def race(name: str) -> list[tuple[str, int]]:
            me, other = users[name], users["bea" if name == "ana" else "ana"]
            seen = []
            with httpx.Client(base_url=base, timeout=30) as http:
                for k in range(15):
                    created = http.post(
                        "/moods/",
                        headers=me,
                        json={"date": day(-k), "energy_level": 1, "notes": name},
                    )
                    mood_id = created.json()["id"]
                    # The other user aims at the very id that was just created.
                    seen.append(
                        (
                            "put",
                            http.put(
                                f"/moods/{mood_id}", headers=other, json={"notes": "stolen"}
                            ).status_code,
                        )
                    )
                    seen.append(
                        ("delete", http.delete(f"/moods/{mood_id}", headers=other).status_code)
                    )
                    listed = http.get("/moods/?limit=1000", headers=me).json()
                    assert all(mood["notes"] == name for mood in listed)
            return seen

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = [outcome for result in pool.map(race, users) for outcome in result]
        with httpx.Client(base_url=base, timeout=30) as http:
            for name, headers in users.items():
                listed = http.get("/moods/?limit=1000", headers=headers).json()
                assert len(listed) == 15 and {mood["notes"] for mood in listed} == {name}
    assert {status for _, status in results} == {404}
