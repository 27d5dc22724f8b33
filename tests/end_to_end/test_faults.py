"""Fault tests, caused for real and bounded in time: uvicorn processes on 127.0.0.1 killed
mid-load, two workers under concurrent writers, two users racing on the same ids; a
database that is locked by another program, vanishes, freezes or cannot be opened."""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import (
    ON_POSTGRES,
    PASSWORD,
    ROOT,
    create_account,
    day,
    free_port,
    fresh_database_url,
    make_settings,
    through_pgbouncer,
    uvicorn_server,
)
from planher.application import create_app
from planher.config import RETRY_AFTER_S
from planher.storage.failures import masked_url


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


def test_a_client_that_goes_away_costs_one_info_line_and_no_traceback(tmp_path):
    log = tmp_path / "server.log"
    with uvicorn_server(f"sqlite:///{tmp_path / 'gone.db'}", log) as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            headers = sign_up(http, "gone@example.org")
            address = urlsplit(base).hostname, urlsplit(base).port
            # Mid-body: the headers promise 1,000 bytes, 12 arrive, then she is gone.
            with socket.create_connection(address) as client:
                client.sendall(
                    b"POST /moods/ HTTP/1.1\r\nHost: planher\r\n"
                    + f"Authorization: {headers['Authorization']}\r\n".encode()
                    + b"X-Request-ID: gone-1\r\n"
                    + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                    + b'{"energy_lev'
                )
                time.sleep(0.5)
            # Mid-response: a long answer, read into a small buffer and cut off at once.
            with socket.create_connection(address) as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                client.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: planher\r\n\r\n")
                assert client.recv(64).startswith(b"HTTP/1.1 200")
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            time.sleep(0.5)
            assert http.get("/moods/", headers=headers).headers["X-Total-Count"] == "0"
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text
    gone = [line for line in text.splitlines() if "went away" in line]
    assert gone == [
        "INFO:     planher.web.middleware: client went away during POST /moods/ [gone-1]"
    ]


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


# ── the database fails, freezes or vanishes ──


class DatabaseProxy:
    """A TCP proxy in front of the PostgreSQL server, run on its own event loop thread,
    that a test can cut (connections dropped, new ones refused: the server is gone) or
    freeze (connections held open, nothing forwarded: the server hangs)."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port, self.frozen = target_port, free_port(), False
        self._connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._on_loop(self._listen())

    def _on_loop(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._connections |= {client_writer, server_writer}
        await asyncio.gather(
            self._pipe(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(0.01)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._connections:
            writer.transport.abort()
        self._connections.clear()

    def cut(self) -> None:
        self._on_loop(self._cut())

    def freeze(self) -> None:
        self.frozen = True

    def restore(self) -> None:
        self.frozen = False
        if self._server is None:
            self._on_loop(self._listen())

    async def _shut_down(self) -> None:
        await self._cut()
        pipes = asyncio.all_tasks() - {asyncio.current_task()}
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    def close(self) -> None:
        self._on_loop(self._shut_down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def proxied_postgres(tmp_path):
    """(the URL of a fresh PostgreSQL database reached through a DatabaseProxy, the proxy)."""
    with fresh_database_url("postgresql", tmp_path) as url:
        parts = urlsplit(url)
        proxy = DatabaseProxy(parts.port or 5432)
        try:
            yield urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}")), proxy
        finally:
            proxy.close()


def unavailable_log_lines(records) -> list[str]:
    return [record.getMessage() for record in records if "unavailable:" in record.getMessage()]


def first_ok_within(client, path: str, headers: dict, seconds: float) -> float | None:
    """Seconds until `path` answers 200 (None if it never did within `seconds`); every
    answer before that must be a 503 with Retry-After."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        response = client.get(path, headers=headers)
        if response.status_code == 200:
            return time.monotonic() - started
        assert response.status_code == 503 and "Retry-After" in response.headers, response.text
        time.sleep(0.1)
    return None


def test_a_sqlite_write_lock_held_elsewhere_costs_writes_a_503_and_one_log_line(tmp_path, caplog):
    path = tmp_path / "locked.db"
    settings = make_settings(f"sqlite:///{path}", db_timeout_s=0.3)
    with TestClient(create_app(settings)) as client:
        account = create_account(client)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        try:
            with caplog.at_level(logging.DEBUG):
                writes = [
                    client.post(
                        "/moods/",
                        headers=account.headers,
                        json={"date": day(-n), "energy_level": 1},
                    )
                    for n in range(8)
                ]
            read = client.get("/moods/", headers=account.headers)
            ready = client.get("/health/ready")
        finally:
            other.execute("ROLLBACK")
            other.close()
        after = client.post("/moods/", headers=account.headers, json={"energy_level": 2})
        stored = client.get("/moods/", headers=account.headers).json()
    assert [write.status_code for write in writes] == [503] * 8
    assert {write.headers["Retry-After"] for write in writes} == {str(RETRY_AFTER_S)}
    assert all(write.json()["detail"].startswith("The database") for write in writes)
    assert read.status_code == 200  # readers never wait for a writer
    assert ready.status_code == 503
    assert after.status_code == 201 and [mood["energy_level"] for mood in stored] == [2]
    lines = unavailable_log_lines(caplog.records)
    assert 1 <= len(lines) == len(set(lines)) <= 2, lines  # one per kind, not one per request
    assert not [record for record in caplog.records if record.exc_info], "no tracebacks"


def test_a_postgresql_server_that_vanishes_costs_503s_and_heals_by_itself(proxied_postgres, caplog):
    url, proxy = proxied_postgres
    with TestClient(create_app(make_settings(url, db_timeout_s=1.0))) as client:
        account = create_account(client)
        client.post("/moods/", headers=account.headers, json={"energy_level": 1})
        proxy.cut()
        with caplog.at_level(logging.DEBUG):
            during = [
                client.get("/moods/", headers=account.headers),
                client.post("/moods/", headers=account.headers, json={"energy_level": 2}),
                client.get("/health/ready"),
                client.get("/predictions/current", headers=account.headers),
            ] * 3
        alive = client.get("/health")
        proxy.restore()
        healed_after_s = first_ok_within(client, "/moods/", account.headers, 5)
        stored = client.get("/moods/", headers=account.headers).json()
    assert {response.status_code for response in during} == {503}
    assert all(response.headers["Retry-After"] for response in during)
    assert alive.status_code == 200
    assert healed_after_s is not None, "not healed within 5 s of the server coming back"
    assert [mood["energy_level"] for mood in stored] == [1]
    lines = unavailable_log_lines(caplog.records)
    assert len(lines) == len(set(lines)) < len(during), lines
    assert not [record for record in caplog.records if record.exc_info], "no tracebacks"


def test_a_frozen_postgresql_server_costs_a_503_after_the_timeout_not_a_hang(proxied_postgres):
    url, proxy = proxied_postgres
    with TestClient(create_app(make_settings(url, db_timeout_s=1.0))) as client:
        account = create_account(client)
        proxy.freeze()
        started = time.monotonic()
        frozen = [client.get("/moods/", headers=account.headers) for _ in range(3)]
        waited_s = time.monotonic() - started
        alive = client.get("/health")
        proxy.restore()
        healed_after_s = first_ok_within(client, "/moods/", account.headers, 5)
        in_use = client.app.state.database.connections_in_use
    assert [response.status_code for response in frozen] == [503] * 3
    assert all("did not answer within 1 s" in r.json()["detail"] for r in frozen)
    assert waited_s < 3 * 3  # about the 1 s timeout each; a hang would be minutes
    assert alive.status_code == 200
    assert healed_after_s is not None
    assert in_use == 0


def start_and_fail(database_url: str, tmp_path) -> tuple[int, str, float]:
    """Start `uvicorn planher:app` on a database it cannot use: (exit code, output, seconds)."""
    environment = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEYS": "start-test"}
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-m", "uvicorn", "planher:app", "--port", str(free_port())],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return finished.returncode, finished.stdout + finished.stderr, time.monotonic() - started


def corrupt_sqlite_file(tmp_path) -> str:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    return f"sqlite:///{path}"


def read_only_sqlite_file(tmp_path) -> str:
    path = tmp_path / "read-only.db"
    with contextlib.closing(sqlite3.connect(path)) as database:
        database.execute("CREATE TABLE something (id INTEGER)")
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i (an immutable file) is not available here")
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    "make_url, cause",
    [
        (lambda tmp_path: "mysql://planher@127.0.0.1/planher", "unsupported database"),
        (lambda tmp_path: f"sqlite:///{tmp_path}/no/such/folder/planher.db", "unable to open"),
        (corrupt_sqlite_file, "file is not a database"),
        (read_only_sqlite_file, "readonly database"),
        (
            lambda tmp_path: f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/test",
            "Connect",  # ConnectionRefusedError, whatever the wording
        ),
    ],
    ids=["bad-url", "unwritable-folder", "corrupt-file", "read-only-file", "server-down"],
)
def test_a_service_that_cannot_use_its_database_exits_with_one_clear_line(
    make_url, cause, tmp_path
):
    url = make_url(tmp_path)
    try:
        code, output, seconds = start_and_fail(url, tmp_path)
    finally:
        subprocess.run(["chattr", "-i", *map(str, tmp_path.glob("*.db"))], capture_output=True)
    [line] = [line for line in output.splitlines() if "cannot start" in line]
    assert code != 0 and seconds < 15, output
    assert masked_url(url) in line and cause in line, output
    assert "s3cret" not in output and "Traceback" not in output, output


def test_a_service_whose_postgresql_server_is_frozen_exits_within_fifteen_seconds(
    proxied_postgres, tmp_path
):
    url, proxy = proxied_postgres
    proxy.freeze()
    code, output, seconds = start_and_fail(url, tmp_path)
    assert code != 0 and seconds < 15, output
    assert "cannot start: the database" in output and "Traceback" not in output, output


# ── the same outage through PgBouncer in transaction mode ──


def test_a_pgbouncer_that_vanishes_costs_503s_and_heals_by_itself(tmp_path, caplog):
    with fresh_database_url("postgresql", tmp_path) as direct_url:
        parts = urlsplit(through_pgbouncer(direct_url))
        proxy = DatabaseProxy(parts.port)  # between PlanHer and its pooler
        try:
            url = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
            settings = make_settings(url, db_timeout_s=1.0, db_statement_cache=False)
            with TestClient(create_app(settings)) as client:
                account = create_account(client)
                client.post("/moods/", headers=account.headers, json={"energy_level": 1})
                proxy.cut()  # the pooler restarts: connections dropped, new ones refused
                with caplog.at_level(logging.DEBUG):
                    during = [
                        client.get("/moods/", headers=account.headers),
                        client.post("/moods/", headers=account.headers, json={"energy_level": 2}),
                        client.get("/health/ready"),
                        client.get("/predictions/current", headers=account.headers),
                    ] * 2
                proxy.restore()
                healed_after_s = first_ok_within(client, "/moods/", account.headers, 5)
                stored = client.get("/moods/", headers=account.headers).json()
                in_use = client.app.state.database.connections_in_use
        finally:
            proxy.close()
    assert {response.status_code for response in during} == {503}
    assert all(response.headers["Retry-After"] for response in during)
    assert healed_after_s is not None, "not healed within 5 s of the pooler coming back"
    assert [mood["energy_level"] for mood in stored] == [1]
    assert in_use == 0
    assert not [record for record in caplog.records if record.exc_info], "no tracebacks"
