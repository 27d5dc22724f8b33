"""Many instances on one PostgreSQL, directly and through PgBouncer in transaction mode:
three of the Procfile's web processes, two uvicorn workers each, behave as one; each is
restarted in turn under load and no one notices."""

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import (
    ON_POSTGRES,
    PASSWORD,
    fresh_database_url,
    make_settings,
    new_email,
    through_pgbouncer,
    uvicorn_server,
)
from planher.clock import utc_now
from planher.storage.database import with_database
from planher.storage.tables import model_training_claims

pytestmark = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="many instances share one PostgreSQL: these run in the suite's PostgreSQL run "
    "(DATABASE_URL=postgresql://…)",
)

INSTANCES = 3
WORKERS_PER_INSTANCE = 2
PROBE_INTERVAL_S = 0.25  # how often the load balancer asks each instance's readiness


@pytest.fixture(params=["direct", "pgbouncer"])
def shared_database(request, tmp_path):
    """(URL, environment) of one fresh PostgreSQL database for every instance: directly, or
    through PgBouncer with the driver's statement caches off, as the docs say to run."""
    with fresh_database_url("postgresql", tmp_path) as url:
        if request.param == "direct":
            yield url, {}
        else:
            yield through_pgbouncer(url), {"DB_STATEMENT_CACHE": "false"}


@contextlib.contextmanager
def instances(shared_database, tmp_path, count: int = INSTANCES, **environment: str):
    """`count` instances on the shared database; yields [(base URL, process, log path)]."""
    url, database_environment = shared_database
    with contextlib.ExitStack() as stack:
        started = []
        for number in range(count):
            log = tmp_path / f"instance-{number}.log"
            base, server = stack.enter_context(
                uvicorn_server(
                    url,
                    log,
                    workers=WORKERS_PER_INSTANCE,
                    **database_environment,
                    **environment,
                )
            )
            started.append((base, server, log))
        yield started


def sign_up(base: str) -> tuple[str, dict]:
    email = new_email()
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/auth/register", json={"email": email, "password": PASSWORD}).is_success
        tokens = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    return email, tokens


def bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def test_sign_in_limits_count_across_instances(shared_database, tmp_path):
    with instances(shared_database, tmp_path, RATE_LIMIT_LOGIN_ACCOUNT_IP="5/900") as started:
        bases = [base for base, _, _ in started]
        email, _ = sign_up(bases[0])
        wrong = {"email": email, "password": "not her password"}
        answers = [
            httpx.post(f"{base}/auth/login", json=wrong, timeout=10).status_code
            for base in itertools.islice(itertools.cycle(bases), 7)
        ]
    assert answers == [401] * 5 + [429] * 2


def test_a_logout_on_one_instance_is_a_401_on_every_other_at_once(shared_database, tmp_path):
    with instances(shared_database, tmp_path) as started:
        (first, _, _), (second, _, _), (third, _, _) = started
        _, tokens = sign_up(first)
        before = [httpx.get(f"{b}/auth/me", headers=bearer(tokens)) for b in (first, third)]
        out = httpx.post(
            f"{second}/auth/logout",
            headers=bearer(tokens),
            json={"refresh_token": tokens["refresh_token"]},
        )
        after = [httpx.get(f"{b}/auth/me", headers=bearer(tokens)) for b in (first, third)]
    assert [answer.status_code for answer in before] == [200, 200]
    assert out.status_code == 204, out.text
    assert [answer.status_code for answer in after] == [401, 401]
    assert {answer.json()["code"] for answer in after} == {"token_revoked"}


def test_refresh_tokens_rotate_across_instances_and_a_reuse_anywhere_ends_the_login(
    shared_database, tmp_path
):
    with instances(shared_database, tmp_path, REFRESH_REUSE_GRACE_S="0") as started:
        (first, _, _), (second, _, _), (third, _, _) = started
        _, tokens = sign_up(first)
        rotated = httpx.post(
            f"{second}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        ).json()
        again = httpx.post(
            f"{third}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
        ).json()
        reuse = httpx.post(
            f"{first}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
        )
        newest_anywhere = [
            httpx.get(f"{base}/auth/me", headers=bearer(again)).status_code
            for base in (first, second, third)
        ]
    assert again["refresh_token"] not in (tokens["refresh_token"], rotated["refresh_token"])
    assert reuse.status_code == 401 and reuse.json()["code"] == "refresh_token_reused"
    assert newest_anywhere == [401, 401, 401]


def energy_history(base: str, tokens: dict, days: int = 30) -> None:
    """A period every 28 days and a mood a day, enough for her own model."""
    today = dt.date.today()
    with httpx.Client(base_url=base, headers=bearer(tokens), timeout=30) as http:
        for start in range(days + 28, 0, -28):
            first_day = today - dt.timedelta(days=start)
            period = {"start_date": first_day.isoformat()}
            assert http.post("/periods/", json=period).status_code == 201
        for offset in range(days, 0, -1):
            date = (today - dt.timedelta(days=offset)).isoformat()
            mood = {"date": date, "energy_level": (offset // 7) % 3}
            assert http.post("/moods/", json=mood).status_code == 201


def on_the_database(shared_database, statement) -> None:
    url, environment = shared_database
    settings = make_settings(url, db_statement_cache=not environment)
    asyncio.run(with_database(settings, lambda database: database.execute(statement)))


def test_a_model_trains_once_at_a_time_across_instances(shared_database, tmp_path):
    with instances(shared_database, tmp_path) as started:
        bases = [base for base, _, _ in started]
        _, tokens = sign_up(bases[0])
        energy_history(bases[1], tokens)
        her = httpx.get(f"{bases[2]}/auth/me", headers=bearer(tokens)).json()["id"]
        claim = model_training_claims.insert().values(subject=f"user:{her}", claimed_at=utc_now())
        on_the_database(shared_database, claim)  # another instance is training her model
        while_claimed = [
            httpx.post(f"{base}/predictions/retrain", headers=bearer(tokens), timeout=60)
            for base in bases
        ]
        on_the_database(shared_database, model_training_claims.delete())
        with ThreadPoolExecutor(max_workers=len(bases) * 2) as pool:
            at_once = list(
                pool.map(
                    lambda base: httpx.post(
                        f"{base}/predictions/retrain", headers=bearer(tokens), timeout=60
                    ),
                    bases * 2,
                )
            )
    assert [answer.status_code for answer in while_claimed] == [202] * len(bases)
    assert {answer.json()["state"] for answer in while_claimed} == {"running"}
    trained = [answer.json()["version"] for answer in at_once if answer.status_code == 200]
    waiting = [answer.json()["state"] for answer in at_once if answer.status_code == 202]
    assert trained and len(trained) == len(set(trained)), "each training its own version"
    assert set(waiting) <= {"running", "queued"}
    assert len(trained) + len(waiting) == len(at_once)


def test_the_retention_sweep_runs_once_a_day_in_all_instances_not_once_per_process(
    shared_database, tmp_path
):
    with instances(shared_database, tmp_path) as started:
        time.sleep(2)  # each process asks at start-up, in the background
        logs = [log for _, _, log in started]
        sweeps = sum(log.read_text().count("retention: swept") for log in logs)
    restarted = tmp_path / "restarted.log"
    url, environment = shared_database
    with uvicorn_server(url, restarted, workers=WORKERS_PER_INSTANCE, **environment):
        time.sleep(2)
    assert sweeps == 1, [log.read_text() for log in logs]
    assert "retention: swept" not in restarted.read_text()


def test_a_calendar_feed_made_on_one_instance_is_served_and_revoked_on_all(
    shared_database, tmp_path
):
    with instances(shared_database, tmp_path) as started:
        (first, _, _), (second, _, _), (third, _, _) = started
        _, tokens = sign_up(first)
        period = {"start_date": (dt.date.today() - dt.timedelta(days=10)).isoformat()}
        httpx.post(f"{first}/periods/", headers=bearer(tokens), json=period)
        feed = httpx.post(f"{first}/users/me/calendar-feed", headers=bearer(tokens), json={}).json()
        path = re.sub(r"^https?://[^/]+", "", feed["url"])
        served = [httpx.get(f"{base}{path}") for base in (first, second, third)]
        httpx.delete(f"{third}/users/me/calendar-feed", headers=bearer(tokens))
        after = [httpx.get(f"{base}{path}").status_code for base in (first, second)]
    assert [answer.status_code for answer in served] == [200, 200, 200]
    assert len({answer.text.replace("\r\n", "\n").split("DTSTAMP")[0] for answer in served}) == 1
    assert after == [404, 404]


# ── restarts no one notices ──


class LoadBalancer:
    """What a load balancer does, in a thread: probes every instance's /health/ready each
    PROBE_INTERVAL_S and sends a request only to one that answered 200, on a new connection;
    a refused connection moves the request on to the next instance (it was never sent), and
    a request once sent is never sent again."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.ready = dict.fromkeys(bases, False)
        self._stopped = threading.Event()
        self._turn = itertools.count()
        self._prober = threading.Thread(target=self._probe, daemon=True)
        self._prober.start()

    def _probe(self) -> None:
        while not self._stopped.is_set():
            for base in self.bases:
                try:
                    self.ready[base] = httpx.get(f"{base}/health/ready", timeout=1).is_success
                except httpx.HTTPError:
                    self.ready[base] = False
            self._stopped.wait(PROBE_INTERVAL_S)

    def request(self, method: str, path: str, **options) -> httpx.Response:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first = next(self._turn)
            for shift in range(len(self.bases)):
                base = self.bases[(first + shift) % len(self.bases)]
                if not self.ready[base]:
                    continue
                try:
                    with httpx.Client(base_url=base, timeout=10) as http:
                        return http.request(method, path, **options)
                except httpx.ConnectError:
                    self.ready[base] = False  # refused: not sent, so sent elsewhere
            time.sleep(0.05)
        raise TimeoutError("no instance was ready for 30 s")

    def stop(self) -> None:
        self._stopped.set()
        self._prober.join(timeout=5)


def restart(number: int, started: list, shared_database, tmp_path, stack) -> int:
    """SIGTERM to every process of instance `number` (as a platform sends it), wait for it
    to exit, and start it again on the same port; its exit code."""
    base, server, _ = started[number]
    os.killpg(server.pid, signal.SIGTERM)
    exit_code = server.wait(timeout=60)
    url, environment = shared_database
    port = int(base.rsplit(":", 1)[1])
    log = tmp_path / f"instance-{number}-restarted.log"
    started[number] = (
        *stack.enter_context(
            uvicorn_server(url, log, workers=WORKERS_PER_INSTANCE, port=port, **environment)
        ),
        log,
    )
    return exit_code


def test_restarting_each_instance_in_turn_under_load_fails_no_request_and_loses_no_write(
    shared_database, tmp_path
):
    _, environment = shared_database
    outcomes: list[str] = []
    acknowledged: dict[str, set[str]] = {}
    with instances(shared_database, tmp_path) as started, contextlib.ExitStack() as stack:
        balancer = LoadBalancer([base for base, _, _ in started])
        stop = threading.Event()

        def client() -> None:
            _, tokens = sign_up(started[0][0])
            mine = acknowledged.setdefault(tokens["access_token"], set())
            for offset in itertools.count(1):
                if stop.is_set():
                    return
                date = (dt.date.today() - dt.timedelta(days=offset)).isoformat()
                calls = [
                    ("POST", "/moods/", {"json": {"date": date, "energy_level": offset % 3}}),
                    ("GET", "/moods/?limit=5", {}),
                    ("GET", "/predictions/current", {}),
                ]
                for method, path, options in calls:
                    try:
                        answer = balancer.request(method, path, headers=bearer(tokens), **options)
                    except (httpx.HTTPError, TimeoutError) as error:
                        outcomes.append(f"{method} {path}: {type(error).__name__}")
                        continue
                    fine = answer.status_code in (200, 201, 409)  # 409: no period logged yet
                    outcomes.append("ok" if fine else f"{method} {path}: {answer.status_code}")
                    if method == "POST" and answer.status_code == 201:
                        mine.add(date)
                time.sleep(0.05)

        with ThreadPoolExecutor(max_workers=4) as pool:
            clients = [pool.submit(client) for _ in range(4)]
            time.sleep(2)
            exit_codes = [
                restart(number, started, shared_database, tmp_path, stack)
                for number in range(INSTANCES)
            ]
            time.sleep(2)
            stop.set()
            for finished in clients:
                finished.result()
        balancer.stop()
        found = {}
        base = started[0][0]
        for access_token in acknowledged:
            page = httpx.get(
                f"{base}/moods/?limit=1000",
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=30,
            )
            found[access_token] = {mood["date"] for mood in page.json()}
    failed = [outcome for outcome in outcomes if outcome != "ok"]
    writes = sum(len(dates) for dates in acknowledged.values())
    print(
        f"\nrolling restart ({'pgbouncer' if environment else 'direct'}): "
        f"{len(outcomes)} requests sent, {len(failed)} failed, {writes} writes acknowledged, "
        f"{sum(len(found[t] & acknowledged[t]) for t in acknowledged)} found afterwards"
    )
    assert exit_codes == [0] * INSTANCES
    assert not failed, failed[:10]
    assert writes > 50 and all(acknowledged[t] <= found[t] for t in acknowledged)
