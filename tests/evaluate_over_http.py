"""The next-period forecast scored through HTTP, as a black box: the Procfile's server on a
fresh database (SQLite, or DATABASE_URL's PostgreSQL), women in two halves.

For each half: the other half's women sign up and log all their cycles; the server is
restarted, so that it learns everyone's cycles at start-up (as it would within the hour);
then, at each period start of each woman of this half, a new account logs her starts so far,
laid out so that the latest is today, and asks `GET /predictions/current`. The answer is
scored on the start that came. The population part never sees the woman it predicts.

    .venv/bin/python tests/evaluate_over_http.py [--cycles CSV]   # FedCycleData by default
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import create_account, fresh_database_url, uvicorn_server  # noqa: E402
from planher.clock import utc_today  # noqa: E402
from planher.cycle_evaluation import (  # noqa: E402
    FEDCYCLE_DATA,
    by_known_cycles,
    forecast_from,
    halves,
    read_cycle_lengths,
    read_fedcycle,
    score_line,
    walk_forward,
)
from planher.cycles.lengths import cycle_lengths  # noqa: E402

LEARNED_LINE = "cycle population learned from"


def log_starts(client: httpx.Client, headers: dict, starts: list[dt.date]) -> None:
    for start in starts:
        response = client.post("/periods/", headers=headers, json={"start_date": start.isoformat()})
        assert response.status_code == 201, response.text


def shifted(starts: list[dt.date], last: dt.date) -> list[dt.date]:
    return [start + (last - starts[-1]) for start in starts]


def log_whole_history(client: httpx.Client, cycles) -> None:
    """Her every start (all her chains), the last of them a week ago."""
    starts = sorted({day for chain, _, end in walk_forward(cycles) for day in (*chain, end)})
    if starts:
        log_starts(
            client,
            create_account(client).headers,
            shifted(starts, utc_today() - dt.timedelta(days=7)),
        )


def wait_until_learned(log: Path, already: int) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if LEARNED_LINE in line]
        if len(lines) > already:
            return lines[-1].split("planher.population_store: ")[-1]
        time.sleep(0.5)
    raise TimeoutError(f"the server did not learn its population: see {log}")


def evaluate(women, dialect: str, folder: Path) -> dict[str, list]:
    """Each half forecast on a database of its own, holding the other half's women."""
    forecasts = collections.defaultdict(list)
    log = folder / "server.log"
    for number, (predicted_half, population_half) in enumerate(
        (halves(women), reversed(halves(women)))
    ):
        round_folder = folder / f"half-{number}"
        round_folder.mkdir()
        with fresh_database_url(dialect, round_folder) as database_url:
            forecast_half(women, predicted_half, population_half, database_url, log, forecasts)
    return forecasts


def forecast_half(women, predicted_half, population_half, database_url, log, forecasts) -> None:
    """The other half logs everything; the server, restarted, learns them; then each of
    this half's women is forecast at each of her starts."""
    quiet = {"POPULATION_CHECK_S": str(10**9)}  # learned at start-up only
    with (
        uvicorn_server(database_url, log, **quiet) as (base, _),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        for name in population_half:
            log_whole_history(client, women[name])
    learned_before = log.read_text().count(LEARNED_LINE)
    with (
        uvicorn_server(database_url, log, **quiet) as (base, _),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        print(f"  {wait_until_learned(log, learned_before)}", flush=True)
        for name in predicted_half:
            for starts, _, actual in walk_forward(women[name]):
                if not (lengths := cycle_lengths(starts)):
                    continue
                account = create_account(client)
                today = utc_today()
                log_starts(client, account.headers, shifted(starts, today))
                answer = client.get("/predictions/current", headers=account.headers)
                assert answer.status_code == 200, answer.text
                cycle = answer.json()["cycle"]
                offset = today - starts[-1]
                forecasts["PlanHer over HTTP"].append(
                    forecast_from(
                        dt.date.fromisoformat(cycle["next_period_start"]) - offset,
                        actual,
                        len(lengths),
                        [dt.date.fromisoformat(day) - offset for day in cycle["next_period_range"]],
                    )
                )
    return forecasts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=Path, help="woman,cycle_length CSV (else FedCycleData)")
    arguments = parser.parse_args()
    women = (
        read_cycle_lengths(arguments.cycles) if arguments.cycles else read_fedcycle(FEDCYCLE_DATA)
    )
    dialect = (
        "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    )
    with tempfile.TemporaryDirectory() as folder:
        print(f"Over HTTP on {dialect}, {len(women)} women:", flush=True)
        started = time.monotonic()
        for rule, forecasts in evaluate(women, dialect, Path(folder)).items():
            for group, figures in by_known_cycles(forecasts).items():
                print(f" known cycles {group}:\n{score_line(rule, figures)}")
        print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
