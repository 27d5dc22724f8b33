"""/predictions: today, the forecast, what she was told, and retraining."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request

from planher.api.common import calendar_of, everyones_cycles, her_calendar, her_today, list_response
from planher.clock import utc_now
from planher.cycles.calendar import CycleCalendar, CycleDay
from planher.cycles.population import CyclePopulation
from planher.energy.models import (
    MIN_DISTINCT_LEVELS,
    PERSONAL_MIN_DAYS,
    EnergyModel,
    days_missing_for_a_model,
    energy_json,
    predict_energy,
)
from planher.energy.store import active_model, training_samples
from planher.energy.trainer import TrainingBusy, train_and_store
from planher.errors import APIError
from planher.schemas.requests import ForecastQuery, ListQuery, PredictionQuery
from planher.schemas.responses import (
    ModelSummaryOut,
    PredictionHistoryOut,
    PredictionOut,
    RetrainStateOut,
)
from planher.security.audit import audit
from planher.storage.database import first_row
from planher.storage.queries import (
    HISTORY_COLUMNS,
    HISTORY_SOURCE,
    Listing,
    list_page,
    lock_her_writes,
)
from planher.storage.tables import predictions
from planher.web.endpoint import Reply, endpoint

PREDICTION_HISTORY = Listing(predictions, predictions.c.date, True, HISTORY_COLUMNS, HISTORY_SOURCE)


NOTHING_TO_PREDICT_FROM = (
    "Nothing to predict from yet: log the first day of your last period, or create your profile"
)


def prediction_json(
    date: dt.date,
    cycle: CycleDay | None,
    outlook: dict[str, Any],
    energy: tuple[tuple[float, float, float], EnergyModel],
) -> dict[str, Any]:
    probabilities, model = energy
    return {
        "date": date,
        "day_of_cycle": None if cycle is None else cycle.day_of_cycle,
        "phase": None if cycle is None else cycle.phase,
        "cycle": outlook,
        "energy": energy_json(probabilities),
        "model": model,
    }


def check_something_to_predict_from(calendar: CycleCalendar) -> None:
    if not calendar.periods and calendar.profile is None:
        raise APIError(409, "nothing_to_predict_from", NOTHING_TO_PREDICT_FROM)


# What makes a served prediction new: confidence alone does not (API.md, Predictions).
SERVED_FIELDS = ("phase", "predicted_level", "model_version", "source")
LAST_SERVED = (
    sa.select(*(predictions.c[name] for name in SERVED_FIELDS))
    .where(
        predictions.c.user_id == sa.bindparam("user_id"),
        predictions.c.date == sa.bindparam("date"),
    )
    .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
    .limit(1)
)


def last_served(connection: sa.Connection, user_id: int, date: dt.date) -> dict | None:
    """What she was last told about `date`, in the fields that make a prediction new."""
    return first_row(connection.execute(LAST_SERVED, {"user_id": user_id, "date": date}))


def calendar_and_last_served(
    connection: sa.Connection, user_id: int, population: CyclePopulation, date: dt.date
) -> tuple[CycleCalendar, dict | None]:
    return calendar_of(connection, user_id, population), last_served(connection, user_id, date)


def told_something_new(last: dict | None, served: dict[str, Any]) -> bool:
    return last != {name: served[name] for name in SERVED_FIELDS}


def record_served(connection: sa.Connection, served: dict[str, Any]) -> None:
    """Record a served prediction unless it is what she was last told about its date."""
    lock_her_writes(connection, served["user_id"])
    if told_something_new(last_served(connection, served["user_id"], served["date"]), served):
        connection.execute(predictions.insert().values(**served, created_at=utc_now()))


@endpoint(
    "Her cycle and energy today (or on `date`); recorded for the history",
    ok=(200, PredictionOut),
    query=PredictionQuery,
    errors={409: "Neither a period nor a profile to predict from"},
)
async def current_prediction(request: Request, query: PredictionQuery) -> Any:
    today, user_id, database = her_today(request), request.user.id, request.app.state.database
    date = query.date or today
    calendar, last = await database.read(
        calendar_and_last_served, user_id, everyones_cycles(request), date
    )
    check_something_to_predict_from(calendar)
    model = await active_model(request.app, user_id)
    cycle = calendar.cycle_day(date, today)
    [energy] = predict_energy(model, [cycle], calendar.profile)
    prediction = prediction_json(date, cycle, calendar.outlook(date, today), energy)
    served = {
        "user_id": user_id,
        "date": date,
        "day_of_cycle": prediction["day_of_cycle"],
        "phase": prediction["phase"],
        "predicted_level": prediction["energy"]["level"],
        "confidence": prediction["energy"]["confidence"],
        "model_version": energy[1].version,
        "source": energy[1].source,
    }
    if told_something_new(last, served):  # checked again, under her lock, as it is written
        await database.write(record_served, served)
    return prediction


@endpoint(
    "One prediction per day from today",
    ok=(200, list[PredictionOut]),
    query=ForecastQuery,
    errors={409: "Neither a period nor a profile to predict from"},
)
async def forecast(request: Request, query: ForecastQuery) -> Any:
    today = her_today(request)
    first = query.date or today
    calendar = await her_calendar(request)
    check_something_to_predict_from(calendar)
    model = await active_model(request.app, request.user.id)
    dates = [first + dt.timedelta(days=offset) for offset in range(query.days)]
    cycles = [calendar.cycle_day(date, today) for date in dates]
    energies = predict_energy(model, cycles, calendar.profile)  # one batch for all days
    return [
        prediction_json(date, cycle, calendar.outlook(date, today), energy)
        for date, cycle, energy in zip(dates, cycles, energies, strict=True)
    ]


@endpoint(
    "Predictions served, scored once the day's mood is logged",
    ok=(200, list[PredictionHistoryOut]),
    query=ListQuery,
)
async def prediction_history(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(
        request.app.state.database, PREDICTION_HISTORY, query, request.user.id
    )
    return list_response(rows, total)


RETRAIN_QUEUED = (
    "Your model is being updated with your latest days right now; this training follows "
    "it, and your predictions use the result within a minute"
)
RETRAIN_RUNNING = (
    "Your model is being trained right now; your predictions use the result within a minute"
)


@endpoint(
    "Train her energy model now",
    ok=(200, ModelSummaryOut),
    accepted=RetrainStateOut,
    errors={409: "Too little data (says how many more days to log)"},
)
async def retrain(request: Request) -> Any:
    as_of = utc_now()
    samples = await training_samples(request.app.state.database, request.user.id)
    levels = [level for *_, level in samples]
    if missing := days_missing_for_a_model(levels):
        raise APIError(
            409,
            "not_enough_data",
            f"Log {missing} more day{'s' if missing > 1 else ''} of energy to train "
            f"your own model: it needs {PERSONAL_MIN_DAYS} days whose cycle day is known "
            f"(a period logged before them), with at least {MIN_DISTINCT_LEVELS} different "
            f"levels; you have {len(levels)}",
        )
    trainer = request.app.state.trainer
    if trainer.is_busy(request.user.id):  # a background pass: this training follows it
        trainer.schedule(request.user.id, force=True)
        return Reply({"state": "queued", "detail": RETRAIN_QUEUED}, 202)
    try:
        row = await train_and_store(request.app, request.user.id, samples, as_of)
    except TrainingBusy:  # another worker or instance holds her model's training claim
        return Reply({"state": "running", "detail": RETRAIN_RUNNING}, 202)
    await audit(request, "retrain", ok=True, target=f"model version {row['version']}")
    return row
