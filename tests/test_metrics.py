"""GET /metrics: off without METRICS_TOKEN, only for its Bearer token, in Prometheus' text
format, the operator's series moving after a journey, and counted across worker processes."""

import collections
import itertools

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from conftest import (
    ROOT,
    create_account,
    drain_training,
    import_file,
    log_generated_history,
    make_settings,
    uvicorn_server,
)
from planher.application import create_app
from planher.energy.demo import DEMO_CONTRARY_ENERGY_BY_PHASE

TOKEN = "metrics-test-token"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


def scrape(client) -> dict[str, float]:
    """Every sample as `name{label=value,…}` → its value, parsed by prometheus_client."""
    response = client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.startswith(name + "{") and all(label in key for label in wanted)
    )


def test_metrics_are_off_without_a_token_and_refused_without_the_right_one(database_url):
    with TestClient(create_app(make_settings(database_url))) as client:
        off = client.get("/metrics", headers=SCRAPER)
    with TestClient(create_app(make_settings(database_url, metrics_token=TOKEN))) as client:
        anonymous = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        document = client.get("/openapi.json").json()
    assert off.status_code == 404
    assert anonymous.status_code == wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert "/metrics" not in document["paths"]


def test_a_journey_moves_every_series_an_operator_watches(database_url):
    settings = make_settings(database_url, metrics_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        before = scrape(client)
        account = create_account(client)
        moods = log_generated_history(
            client, account, days=90, energy_by_phase=DEMO_CONTRARY_ENERGY_BY_PHASE
        )
        drain_training(client)
        for _ in range(2):
            client.get("/predictions/current", headers=account.headers)
        sample = (ROOT / "tests" / "samples" / "drip-export.csv").read_bytes()
        imported = import_file(client, create_account(client), sample)
        client.app.state.shutdown.draining = True  # what SIGTERM does first
        unready = client.get("/health/ready")
        client.app.state.shutdown.draining = False
        after = scrape(client)
    assert imported.status_code == 200 and unready.status_code == 503

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("planher_requests_total", route="/moods/", method="POST", status="201") == len(
        moods
    )
    assert moved("planher_request_duration_seconds_count", route="/auth/login") == 2
    assert moved("planher_unavailable_total", cause="shutting_down") == 1
    assert moved("planher_database_call_duration_seconds_count", kind="statement") > 90
    assert moved("planher_database_call_duration_seconds_count", kind="write") > 0
    assert total(after, "planher_database_connections_in_use") == 0  # none running now
    assert moved("planher_database_connection_wait_seconds_count") >= 0
    assert moved("planher_training_duration_seconds_count", model="personal") >= 1
    assert total(after, "planher_training_queue_length") == 0  # all trained
    assert moved("planher_model_cache_total", result="hit") >= 1
    assert moved("planher_model_cache_total", result="miss") >= 1
    assert moved("planher_imports_total", format="drip", outcome="imported") == 1
    assert moved("planher_requests_total", route="/metrics", status="200") == 1
    unmatched = [key for key in after if "route=/users/" in key and key.count("/") > 3]
    assert not unmatched, "routes are templates, never paths with ids"


def test_every_worker_process_is_counted_whichever_answers_the_scrape(database_url, tmp_path):
    log = tmp_path / "server.log"
    with uvicorn_server(database_url, log, workers=2, METRICS_TOKEN=TOKEN) as (base, _):
        for _ in range(40):
            with httpx.Client(base_url=base) as fresh_connection:
                assert fresh_connection.get("/health").status_code == 200
        counted = collections.Counter()
        for _ in itertools.repeat(None, 6):
            with httpx.Client(base_url=base) as fresh_connection:
                samples = scrape(fresh_connection)
            counted[total(samples, "planher_requests_total", route="/health")] += 1
    # Every scrape, whichever worker answered it, counts the 40 (and the wait for start-up).
    assert len(counted) == 1 and next(iter(counted)) >= 40, counted
