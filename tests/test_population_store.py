"""Everyone's cycles learned in the background: at start-up, and again once new periods come."""

import time

from starlette.testclient import TestClient

from conftest import ON_POSTGRES, create_account, day, fresh_database_url, make_settings
from planher import population_store
from planher.application import create_app
from planher.population_store import PopulationStore


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


def test_new_periods_are_learned_in_the_background_and_change_a_newcomers_forecast(
    tmp_path, monkeypatch
):
    # Learn as often as it can: the 1/30 duty would space fits minutes apart on a busy machine.
    monkeypatch.setattr(population_store, "POPULATION_REFRESH_DUTY", 1)
    dialect = "postgresql" if ON_POSTGRES else "sqlite"
    with (
        fresh_database_url(dialect, tmp_path) as url,
        TestClient(create_app(make_settings(url, population_check_s=0.2))) as client,
    ):
        store = client.app.state.cycle_population
        wait_for(lambda: store.learned_at > 0)  # at start-up, from no one
        assert store.current.n_women == 0
        newcomer = create_account(client)
        client.post("/periods/", headers=newcomer.headers, json={"start_date": day(-3)})
        before = client.get("/predictions/current", headers=newcomer.headers).json()["cycle"]

        for _ in range(30):  # women of 34-day cycles
            woman = create_account(client)
            for start in (-139, -105, -71, -37):
                body = {"start_date": day(start)}
                assert client.post("/periods/", headers=woman.headers, json=body).status_code == 201
        wait_for(lambda: store.current.n_women == 30)
        after = client.get("/predictions/current", headers=newcomer.headers).json()["cycle"]
        assert after["length_estimate"] > before["length_estimate"]

        # Past its pause, a store learns again only when a period was logged since.
        watched = PopulationStore(client.app.state.database, check_s=0.2)
        assert client.portal.call(watched.learn).n_women == 30
        pause_s = max(watched.check_s, watched.learning_s)
        watched.learned_at = time.monotonic() - pause_s - 1
        assert not client.portal.call(watched.due)
        client.post("/periods/", headers=newcomer.headers, json={"start_date": day(-40)})
        assert client.portal.call(watched.due)
