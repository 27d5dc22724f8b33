"""Predictions: current, forecast, history and retrain (replaces the old /predict)."""

import asyncio
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import (
    ON_POSTGRES,
    ROOT,
    TEST_SECRET_KEY,
    create_account,
    day,
    drain_training,
    fresh_database_url,
    log_generated_history,
    make_settings,
    run,
)
from planher.api.predictions import RETRAIN_QUEUED
from planher.application import create_app
from planher.clock import utc_now, utc_today
from planher.config import ENERGY_LABELS, TRAINING_CLAIM_STALE_S
from planher.cycles.calendar import CycleCalendar
from planher.cycles.population import BUILT_IN_POPULATION
from planher.energy import models, store
from planher.energy.demo import DEMO_CONTRARY_ENERGY_BY_PHASE, bayes_rate, generate_demo_history
from planher.energy.models import PERSONAL_MIN_DAYS, ModelCache, deserialize_model
from planher.energy.store import model_subject
from planher.energy.trainer import (
    POPULATION_MIN_DAYS,
    retrain_if_due,
    training_claim,
)
from planher.storage.queries import MODEL_METADATA_COLUMNS, owner_condition
from planher.storage.tables import model_training_claims, user_models

PROFILE = {"height_cm": 165, "weight_kg": 60}
NEW_SERVICE_LENGTH = BUILT_IN_POPULATION.forecast([]).median  # before anyone's cycles


def current(client, account, query: str = "") -> dict:
    response = client.get(f"/predictions/current{query}", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def retrain(client, account) -> dict:
    response = client.post("/predictions/retrain", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def log_moods(client, account, levels_by_offset: dict[int, int]) -> None:
    for offset, level in levels_by_offset.items():
        response = client.post(
            "/moods/", headers=account.headers, json={"date": day(offset), "energy_level": level}
        )
        assert response.status_code == 201, response.text


def model_rows(client, user_id: int | None) -> list[dict]:
    condition = owner_condition(user_id)
    rows = run(
        client,
        client.app.state.database.fetch_all,
        sa.select(*MODEL_METADATA_COLUMNS).where(condition).order_by(user_models.c.version),
    )
    return rows


UNLIKE_THE_PRIOR = DEMO_CONTRARY_ENERGY_BY_PHASE


@pytest.fixture
def without_a_population_model(client, monkeypatch):
    """A service whose population model is not trained yet, so a woman's model is pooled
    toward the phase prior: women of one pattern logged by earlier tests would otherwise
    make a population model she cannot clearly beat (and rightly so)."""
    monkeypatch.setattr("planher.energy.trainer.POPULATION_MIN_DAYS", 10**6)
    drain_training(client)
    run(
        client,
        client.app.state.database.execute,
        user_models.delete().where(user_models.c.user_id.is_(None)),
    )


def account_with_personal_model(client, seed: int) -> tuple:
    """A new account with 90 generated days of a woman unlike the phase prior (so her own
    model clearly wins), served by her own model; and its version. Needs
    without_a_population_model."""
    account = create_account(client)
    log_generated_history(client, account, days=90, seed=seed, energy_by_phase=UNLIKE_THE_PRIOR)
    drain_training(client)
    served = current(client, account)["model"]
    assert served["source"] == "personal"
    return account, served["version"]


# ── current ──


def test_without_a_period_or_a_profile_there_is_nothing_to_predict_from(client, account):
    for path in ("/predictions/current", "/predictions/forecast"):
        response = client.get(path, headers=account.headers)
        assert response.status_code == 409
        assert response.json()["code"] == "nothing_to_predict_from"
        assert "period" in response.json()["detail"] and "profile" in response.json()["detail"]
        assert "/" not in response.json()["detail"]  # words for her, not API paths


def test_with_only_a_profile_the_cycle_is_unknown_and_the_phase_prior_answers(client, account):
    client.post("/profiles/me", headers=account.headers, json={**PROFILE, "cycle_length": 31})
    prediction = current(client, account)
    assert prediction["date"] == day(0)
    assert prediction["day_of_cycle"] is None and prediction["phase"] is None
    assert prediction["cycle"] == {
        "length_estimate": 31,
        "last_period_start": None,
        "next_period_start": None,
        "next_period_range": None,
        "days_until_next_period": None,
        "fertile_window": None,
        "ovulation": None,
        "days_late": None,
    }
    assert prediction["model"] == {
        "source": "phase_prior",
        "version": None,
        "type": "phase_prior",
        "trained_at": None,
        "n_samples": 0,
        "cv_accuracy": None,
        "baseline_accuracy": None,
        "brier_score": None,
    }


def test_the_cycle_block_comes_from_the_calculator(client, account):
    client.post(
        "/periods/", headers=account.headers, json={"start_date": day(-10), "end_date": day(-6)}
    )
    prediction = current(client, account)
    assert (prediction["day_of_cycle"], prediction["phase"]) == (11, "follicular")
    cycle = prediction["cycle"]
    length = NEW_SERVICE_LENGTH  # no cycle of hers yet, nor anyone's
    assert cycle["length_estimate"] == length
    assert cycle["last_period_start"] == day(-10)
    assert cycle["next_period_start"] == day(-10 + length)
    assert cycle["days_until_next_period"] == length - 10
    low, high = cycle["next_period_range"]
    assert low < day(-10 + length) < high
    ovulation = -10 + length - 14 - 1  # her luteal phase before the next start
    assert cycle["fertile_window"] == [day(ovulation - 5), day(ovulation + 1)]
    assert cycle["days_late"] is None


def test_current_takes_a_date_and_refuses_a_malformed_one(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-10)})
    assert current(client, account, f"?date={day(-9)}")["day_of_cycle"] == 2
    response = client.get("/predictions/current?date=tomorrow", headers=account.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "date"]


def test_energy_has_a_level_label_confidence_and_probabilities_summing_to_one(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-2)})
    energy = current(client, account)["energy"]
    probabilities = energy["probabilities"]
    assert set(probabilities) == {"low", "medium", "high"}
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    assert energy["label"] == ENERGY_LABELS[energy["level"]]
    assert energy["confidence"] == probabilities[energy["label"]] == max(probabilities.values())


# ── history ──


def test_every_served_prediction_is_recorded_and_scored_once_its_mood_is_logged(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-5)})
    served = [current(client, account, f"?date={day(-1)}"), current(client, account)]
    history = client.get("/predictions/history", headers=account.headers)
    assert history.headers["X-Total-Count"] == "2"
    items = history.json()
    assert [item["date"] for item in items] == [day(0), day(-1)]
    assert all(item["actual_level"] is None and item["hit"] is None for item in items)
    assert items[0]["predicted_level"] == served[1]["energy"]["level"]
    assert items[0]["confidence"] == served[1]["energy"]["confidence"]
    assert items[0]["source"] == served[1]["model"]["source"]

    predicted = items[1]["predicted_level"]
    log_moods(client, account, {-1: predicted})
    scored = client.get("/predictions/history", headers=account.headers).json()[1]
    assert (scored["actual_level"], scored["hit"]) == (predicted, True)
    assert set(scored) == {
        "date",
        "day_of_cycle",
        "phase",
        "predicted_level",
        "confidence",
        "model_version",
        "source",
        "actual_level",
        "hit",
        "created_at",
    }


def test_a_prediction_served_again_unchanged_is_recorded_once_and_each_change_again(
    client, account
):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-5)})
    for _ in range(3):
        current(client, account)
    history = client.get("/predictions/history", headers=account.headers)
    assert history.headers["X-Total-Count"] == "1"
    first_phase = history.json()[0]["phase"]

    today_period = client.post("/periods/", headers=account.headers, json={"start_date": day(0)})
    for _ in range(2):
        assert current(client, account)["phase"] == "menstrual"
    client.delete(f"/periods/{today_period.json()['id']}", headers=account.headers)
    for _ in range(2):
        current(client, account)
    history = client.get("/predictions/history", headers=account.headers).json()
    # What she was told about today, and when it changed: there and back again.
    assert [item["phase"] for item in history] == [first_phase, "menstrual", first_phase]


def test_history_pages_and_filters_by_date_and_is_hers_alone(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-20)})
    for offset in (-4, -3, -2, -1):
        current(client, account, f"?date={day(offset)}")
    page = client.get(
        f"/predictions/history?from={day(-3)}&to={day(-2)}&limit=1", headers=account.headers
    )
    assert page.headers["X-Total-Count"] == "2"
    assert [item["date"] for item in page.json()] == [day(-2)]
    stranger = create_account(client)
    assert client.get("/predictions/history", headers=stranger.headers).json() == []
    assert client.get("/predictions/history?limit=5000", headers=account.headers).status_code == 422


# ── forecast ──


def test_forecast_has_one_entry_per_day_from_today(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-3)})
    forecast = client.get("/predictions/forecast", headers=account.headers).json()
    assert [entry["date"] for entry in forecast] == [day(offset) for offset in range(28)]
    assert [entry["day_of_cycle"] for entry in forecast[:3]] == [4, 5, 6]
    # Past the expected start, the forecast continues into the projected next cycle.
    next_start = NEW_SERVICE_LENGTH - 3
    assert forecast[next_start]["day_of_cycle"] == 1
    assert forecast[next_start]["phase"] == "menstrual"
    assert forecast[next_start]["cycle"]["last_period_start"] == day(next_start)
    assert all(
        set(entry) == {"date", "day_of_cycle", "phase", "cycle", "energy", "model"}
        for entry in forecast
    )
    one = client.get("/predictions/forecast?days=1", headers=account.headers).json()
    assert len(one) == 1 and one[0]["date"] == day(0)
    assert len(client.get("/predictions/forecast?days=90", headers=account.headers).json()) == 90
    for days in (0, 91, "many"):
        response = client.get(f"/predictions/forecast?days={days}", headers=account.headers)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "days"]


def test_forecast_is_not_recorded_in_history(client, account):
    client.post("/periods/", headers=account.headers, json={"start_date": day(-3)})
    client.get("/predictions/forecast", headers=account.headers)
    assert client.get("/predictions/history", headers=account.headers).json() == []


# ── retrain and the personal model ──


def test_retrain_with_too_little_data_is_409_saying_how_many_more_days(client, account):
    response = client.post("/predictions/retrain", headers=account.headers)
    assert response.status_code == 409
    assert "Log 10 more days" in response.json()["detail"]
    client.post("/periods/", headers=account.headers, json={"start_date": day(-9)})
    log_moods(client, account, {offset: 1 for offset in range(-7, 0)})
    response = client.post("/predictions/retrain", headers=account.headers)
    assert response.status_code == 409
    assert "Log 3 more days" in response.json()["detail"]
    log_moods(client, account, {-9: 1, -8: 1, 0: 1})  # ten days, but all the same level
    response = client.post("/predictions/retrain", headers=account.headers)
    assert response.status_code == 409
    assert "Log 1 more day " in response.json()["detail"]


def claim(client, subject: str, seconds_ago: float) -> None:
    """A training claim on `subject`, last renewed `seconds_ago`, as a trainer leaves it."""
    claimed_at = utc_now() - dt.timedelta(seconds=seconds_ago)
    table = model_training_claims
    run(client, client.app.state.database.execute, table.delete())
    run(
        client,
        client.app.state.database.execute,
        table.insert().values(subject=subject, claimed_at=claimed_at),
    )


def test_a_training_claim_of_a_process_that_died_is_taken_over_within_a_minute(client):
    account = create_account(client)
    log_generated_history(client, account, days=30)
    drain_training(client)
    subject = model_subject(account.user["id"])
    claim(client, subject, seconds_ago=TRAINING_CLAIM_STALE_S - 10)  # live holder
    busy = client.post("/predictions/retrain", headers=account.headers)
    claim(client, subject, seconds_ago=TRAINING_CLAIM_STALE_S + 1)  # killed with -9
    taken_over = client.post("/predictions/retrain", headers=account.headers)
    assert busy.status_code == 202 and busy.json()["state"] == "running", busy.text
    assert taken_over.status_code == 200, taken_over.text
    assert TRAINING_CLAIM_STALE_S < 60


def test_retrain_while_a_background_pass_runs_is_202_queued_and_then_trains(client, monkeypatch):
    account = create_account(client)
    log_generated_history(client, account, days=30)
    drain_training(client)
    newest = lambda: max(  # noqa: E731
        (row["version"] for row in model_rows(client, account.user["id"])), default=0
    )
    versions_before = newest()
    released = asyncio.Event()
    real_pass = retrain_if_due

    async def a_slow_pass(app, user_id, force=False):
        if not released.is_set():
            await released.wait()  # the background pass that a logged mood started
        await real_pass(app, user_id, force)

    monkeypatch.setattr("planher.energy.trainer.retrain_if_due", a_slow_pass)
    client.portal.call(client.app.state.trainer.schedule, account.user["id"])
    queued = client.post("/predictions/retrain", headers=account.headers)
    assert queued.status_code == 202, queued.text
    assert queued.json() == {"state": "queued", "detail": RETRAIN_QUEUED}
    client.portal.call(released.set)
    drain_training(client)
    assert newest() > versions_before


def test_a_model_that_does_not_beat_the_baseline_says_why_it_is_not_used(client):
    account = create_account(client)
    log_generated_history(client, account, days=30, what=("periods",))
    levels = {-offset: (2 if offset in (3, 17) else 1) for offset in range(1, 25)}
    log_moods(client, account, levels)
    drain_training(client)
    summary = retrain(client, account)
    assert summary["shipped"] is False, summary
    assert "no better than always guessing your most common level" in summary["reason"]
    assert "/" not in summary["reason"]


def test_a_trainer_renews_its_claim_while_it_trains(client, monkeypatch):
    monkeypatch.setattr("planher.energy.trainer.TRAINING_CLAIM_HEARTBEAT_S", 0.05)
    database = client.app.state.database
    claimed_at = model_training_claims.c.claimed_at

    async def hold_the_claim() -> tuple:
        async with training_claim(database, "population") as claimed:
            first = await database.fetch_val(sa.select(claimed_at))
            await asyncio.sleep(0.3)
            renewed = await database.fetch_val(sa.select(claimed_at))
        return claimed, first, renewed, await database.fetch_val(sa.select(claimed_at))

    claimed, first, renewed, after = run(client, hold_the_claim)
    assert claimed and renewed > first
    assert after is None  # given up at the end


def test_ninety_days_unlike_the_prior_train_a_personal_model_well_above_the_baseline(
    client, capsys, without_a_population_model
):
    trainable = {"random_forest", "hist_gradient_boosting", "logistic_regression", "mlp"}
    gaps, accuracies, bayes_rates = [], [], []
    for seed in range(5):
        account = create_account(client)
        moods = log_generated_history(
            client, account, days=90, seed=seed, energy_by_phase=UNLIKE_THE_PRIOR
        )
        drain_training(client)
        summary = retrain(client, account)
        assert summary["n_samples"] == 90 and summary["shipped"] is True, summary
        scores = {c["type"]: c for c in summary["candidates"]}
        assert set(scores) == trainable | {"partial_pooling", "majority", "phase_prior"}
        assert summary["type"] in trainable | {"partial_pooling"}
        assert summary["cv_accuracy"] > summary["baseline_accuracy"]
        assert summary["brier_score"] < scores["phase_prior"]["brier_score"]
        assert current(client, account)["model"]["brier_score"] == summary["brier_score"]
        calendar = CycleCalendar.build(generate_demo_history(90, utc_today(), seed)[0])
        bayes_rates.append(
            bayes_rate((calendar.cycle_day(date).phase for date, _ in moods), UNLIKE_THE_PRIOR)
        )
        gaps.append(summary["cv_accuracy"] - summary["baseline_accuracy"])
        accuracies.append(summary["cv_accuracy"])
    with capsys.disabled():
        print(
            f"\n90 generated days unlike the prior, 5 seeds: forward accuracy "
            f"{statistics.mean(accuracies):.3f}, majority baseline "
            f"{statistics.mean(accuracies) - statistics.mean(gaps):.3f} (gap "
            f"{statistics.mean(gaps):+.3f}; per seed {[round(g, 2) for g in gaps]}), "
            f"Bayes rate {statistics.mean(bayes_rates):.3f}"
        )
    assert statistics.mean(gaps) >= 0.08


def test_the_forecast_follows_her_own_pattern_where_it_defies_the_phase_prior(
    client, without_a_population_model
):
    account = create_account(client)
    log_generated_history(client, account, days=120, seed=11, energy_by_phase=UNLIKE_THE_PRIOR)
    drain_training(client)
    forecast = client.get("/predictions/forecast?days=56", headers=account.headers).json()
    assert {entry["model"]["source"] for entry in forecast} == {"personal"}
    most_likely = {
        phase: max(range(3), key=lambda level: weights[level])
        for phase, weights in UNLIKE_THE_PRIOR.items()
    }
    agree = [entry["energy"]["level"] == most_likely[entry["phase"]] for entry in forecast]
    assert sum(agree) / len(agree) >= 0.75
    for phase in {entry["phase"] for entry in forecast}:
        mean_probability = {
            label: statistics.mean(
                e["energy"]["probabilities"][label] for e in forecast if e["phase"] == phase
            )
            for label in ENERGY_LABELS
        }
        likeliest = max(mean_probability, key=mean_probability.get)
        assert likeliest == ENERGY_LABELS[most_likely[phase]], (phase, mean_probability)


def test_retrain_makes_a_new_version_that_current_serves_through_the_cache(
    client, without_a_population_model
):
    account, _ = account_with_personal_model(client, seed=3)
    before = current(client, account)["model"]
    summary = retrain(client, account)
    assert summary["version"] == before["version"] + 1
    after = current(client, account)["model"]
    assert after["version"] == summary["version"]
    cached = client.app.state.model_cache.get(f"user:{account.user['id']}", summary["version"])
    assert cached is not None and cached.version == summary["version"]


def test_a_retrain_in_another_worker_is_seen_at_once(client, settings, without_a_population_model):
    account, version = account_with_personal_model(client, seed=4)
    with TestClient(create_app(settings)) as other_worker:
        summary = other_worker.post("/predictions/retrain", headers=account.headers).json()
    assert summary["version"] == version + 1
    assert current(client, account)["model"]["version"] == version + 1


def test_a_tampered_model_is_refused_and_retrained(client, caplog, without_a_population_model):
    account, _ = account_with_personal_model(client, seed=7)
    drain_training(client)  # a training her last request set off would outdate the forgery
    client.app.state.model_cache = ModelCache(10)  # as in a freshly started worker
    table, database = user_models, client.app.state.database
    stored = run(
        client,
        database.fetch_all,
        sa.select(table.c.id, table.c.version, table.c.model_blob).where(
            table.c.user_id == account.user["id"], table.c.model_blob.is_not(None)
        ),
    )
    for row in stored:  # every stored version of hers, so whichever is served is forged
        forged = row["model_blob"][:-1] + bytes([row["model_blob"][-1] ^ 1])
        run(
            client,
            database.execute,
            table.update().where(table.c.id == row["id"]).values(model_blob=forged),
        )
    version = run(  # her newest, shipped or not: the retraining comes after it
        client,
        database.fetch_val,
        sa.select(sa.func.max(table.c.version)).where(table.c.user_id == account.user["id"]),
    )
    refused = current(client, account)["model"]
    assert refused["source"] != "personal"
    assert "refused (BadSignature); retraining it" in caplog.text
    drain_training(client)
    retrained = current(client, account)["model"]
    assert retrained["source"] == "personal" and retrained["version"] == version + 1


def test_a_model_saved_by_another_scikit_learn_is_retrained_not_loaded(
    client, monkeypatch, without_a_population_model
):
    account, version = account_with_personal_model(client, seed=8)
    client.app.state.model_cache = ModelCache(10)
    table = user_models
    hers = table.c.user_id == account.user["id"]
    run(
        client,
        client.app.state.database.execute,
        table.update().where(hers).values(sklearn_version="0.24.2"),
    )
    her_blobs = {
        row["model_blob"]
        for row in run(
            client, client.app.state.database.fetch_all, sa.select(table.c.model_blob).where(hers)
        )
    }
    loaded, real = [], deserialize_model
    monkeypatch.setattr(
        "planher.energy.store.deserialize_model",
        lambda blob, signer: loaded.append(blob) or real(blob, signer),
    )
    assert current(client, account)["model"]["source"] != "personal"
    assert not her_blobs & set(loaded)
    drain_training(client)
    retrained = current(client, account)["model"]
    assert retrained["source"] == "personal" and retrained["version"] == version + 1


def test_five_new_or_changed_moods_retrain_automatically(client):
    account = create_account(client)
    log_generated_history(client, account, days=30, seed=8)
    drain_training(client)
    retrain(client, account)  # nothing changed since this one
    versions = lambda: [row["version"] for row in model_rows(client, account.user["id"])]  # noqa: E731
    settled = versions()
    log_moods(client, account, {-35: 2})  # a day before her generated history
    moods = client.get("/moods/?limit=3", headers=account.headers).json()
    for mood in moods[1:]:
        client.put(f"/moods/{mood['id']}", headers=account.headers, json={"energy_level": 0})
    drain_training(client)
    assert versions() == settled  # three changes: not yet
    for mood in client.get("/moods/?limit=2&offset=3", headers=account.headers).json():
        client.put(f"/moods/{mood['id']}", headers=account.headers, json={"notes": "changed"})
    drain_training(client)
    assert versions() == settled + [settled[-1] + 1]


def test_a_model_that_does_not_beat_the_baseline_is_not_shipped(client):
    account = create_account(client)
    client.post("/periods/", headers=account.headers, json={"start_date": day(-40)})
    client.post("/periods/", headers=account.headers, json={"start_date": day(-12)})
    # Medium every day but two: nothing beats always guessing medium.
    log_moods(client, account, {offset: 1 for offset in range(-39, 0) if offset not in (-30, -5)})
    log_moods(client, account, {-30: 0, -5: 2})
    drain_training(client)
    summary = retrain(client, account)
    assert summary["shipped"] is False
    assert summary["cv_accuracy"] <= summary["baseline_accuracy"]
    assert current(client, account)["model"]["source"] != "personal"


def test_training_and_loading_never_run_on_the_event_loop(client, monkeypatch):
    threads = []
    # Each patched where it is looked up: the models train, the store loads.
    for module, name in [
        (models, "train_energy_model"),
        (store, "deserialize_model"),
    ]:
        real = getattr(module, name)

        def recording(*args, _real=real):
            threads.append(threading.get_ident())
            return _real(*args)

        monkeypatch.setattr(module, name, recording)
    account = create_account(client)
    log_generated_history(client, account, days=20, seed=9)
    drain_training(client)
    client.app.state.model_cache = ModelCache(10)
    current(client, account)
    loop_thread = client.portal.call(threading.get_ident)
    assert threads and loop_thread not in threads


def test_predictions_need_a_token(client):
    for method, path in [
        ("GET", "/predictions/current"),
        ("GET", "/predictions/forecast"),
        ("GET", "/predictions/history"),
        ("POST", "/predictions/retrain"),
    ]:
        assert client.request(method, path).status_code == 401


# ── where predictions come from, as data grows ──


def test_the_source_moves_from_phase_prior_to_population_to_personal(tmp_path):
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url:
        with TestClient(create_app(make_settings(url))) as client:
            newcomer = create_account(client)
            log_generated_history(client, newcomer, days=60, seed=20, what=("periods",))
            assert current(client, newcomer)["model"]["source"] == "phase_prior"

            for seed in (21, 22):  # others, all alike, log enough for a population model
                log_generated_history(
                    client,
                    create_account(client),
                    days=40,
                    seed=seed,
                    energy_by_phase=UNLIKE_THE_PRIOR,
                )
            drain_training(client)
            population = current(client, newcomer)["model"]
            assert population["source"] == "population"
            assert population["version"] >= 1 and population["n_samples"] >= POPULATION_MIN_DAYS

            log_generated_history(client, newcomer, days=60, seed=20, what=("moods",))
            drain_training(client)
            personal = current(client, newcomer)["model"]
            assert personal["source"] == "personal" and personal["n_samples"] >= PERSONAL_MIN_DAYS


def log_cycles(client, account, lengths: list[int], last_start: int, **fields) -> None:
    """Periods `lengths` days apart, the latest starting `last_start` days from today."""
    offsets = [last_start]
    for length in reversed(lengths):
        offsets.insert(0, offsets[0] - length)
    for offset in offsets:
        body = {"start_date": day(offset), "end_date": day(offset + 3), **fields}
        response = client.post("/periods/", headers=account.headers, json=body)
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def among_28_day_women(tmp_path_factory):
    """A service whose women (forty of them) run 28 ± 1 days, its population learned."""
    dialect = "postgresql" if ON_POSTGRES else "sqlite"
    with (
        fresh_database_url(dialect, tmp_path_factory.mktemp("population")) as url,
        TestClient(create_app(make_settings(url))) as client,
    ):
        for woman in range(40):
            log_cycles(
                client, create_account(client), [28 + (woman + k) % 3 - 1 for k in range(6)], -3
            )
        population = client.portal.call(client.app.state.cycle_population.learn)  # as every hour
        assert population.n_women == 40
        yield client


def test_one_long_cycle_among_28_day_women_is_forecast_closer_to_28_and_ten_35s_near_35(
    among_28_day_women,
):
    client = among_28_day_women
    one_long = create_account(client)
    log_cycles(client, one_long, [40], -3)
    estimate = current(client, one_long)["cycle"]["length_estimate"]
    assert abs(estimate - 28) < abs(estimate - 40)
    ten_35s = create_account(client)
    log_cycles(client, ten_35s, [35] * 10, -3)
    cycle = current(client, ten_35s)["cycle"]
    assert 34 <= cycle["length_estimate"] <= 36
    assert cycle["next_period_start"] == day(-3 + cycle["length_estimate"])


def test_cycles_she_set_aside_are_left_out_of_her_forecast(among_28_day_women):
    client = among_28_day_women
    usual, with_illness, counted = (create_account(client) for _ in range(3))
    log_cycles(client, usual, [30, 30, 30], -3)
    for woman, excluded in ((with_illness, True), (counted, False)):
        log_cycles(client, woman, [30, 30, 30], -3)
        for start in (-93 - 38 * 3, -93 - 38 * 2, -93 - 38):  # three 38-day cycles before
            body = {"start_date": day(start), "excluded": excluded}
            assert client.post("/periods/", headers=woman.headers, json=body).status_code == 201
    assert current(client, with_illness)["cycle"] == current(client, usual)["cycle"]
    assert current(client, counted)["cycle"] != current(client, usual)["cycle"]
    periods = client.get("/periods/", headers=with_illness.headers).json()
    assert [period["excluded"] for period in periods].count(True) == 3


def test_a_cycle_past_its_estimate_is_forecast_from_today_on_with_days_late(among_28_day_women):
    client = among_28_day_women
    woman = create_account(client)
    log_cycles(client, woman, [28] * 6, -35)  # 35 days into a usual 28-day cycle
    prediction = current(client, woman)
    cycle = prediction["cycle"]
    assert cycle["days_late"] == 7
    assert cycle["next_period_start"] >= day(0)
    assert day(0) <= cycle["next_period_range"][0] <= cycle["next_period_start"]
    assert cycle["next_period_start"] <= cycle["next_period_range"][1]
    assert cycle["days_until_next_period"] >= 0
    assert prediction["phase"] == "late"  # past the range she was given at its beginning
    forecast = client.get("/predictions/forecast?days=3", headers=woman.headers).json()
    assert [item["cycle"]["days_late"] for item in forecast] == [7, 7, 7]

    on_time = create_account(client)
    log_cycles(client, on_time, [28] * 6, -27)
    cycle = current(client, on_time)["cycle"]
    assert cycle["days_late"] is None and cycle["next_period_start"] == day(1)
    a_day_late = create_account(client)
    log_cycles(client, a_day_late, [28] * 6, -29)
    cycle = current(client, a_day_late)["cycle"]
    assert cycle["days_late"] == 1 and cycle["next_period_start"] >= day(0)


def test_the_demo_command_makes_a_woman_who_signs_in_to_her_trained_model(tmp_path):
    with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url:
        printed = subprocess.run(
            [sys.executable, "-m", "planher", "demo", "--days", "120"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "SECRET_KEYS": TEST_SECRET_KEY},
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        email, password = re.search(r"Demo user: (\S+)  password: (\S+)", printed).groups()
        assert "forward-validated accuracy" in printed and "Brier" in printed
        with TestClient(create_app(make_settings(url))) as client:
            login = client.post("/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            summary = client.get("/users/me/export", headers=headers).json()["models"][-1]
            assert summary["n_samples"] == 120 and summary["brier_score"] is not None
            model = client.get("/predictions/current", headers=headers).json()["model"]
            assert (model["source"] == "personal") == summary["shipped"]
