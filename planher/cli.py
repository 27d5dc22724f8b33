"""The command line: `python -m planher` migrate, create-admin, backup, restore, demo, evaluate,
worker."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import secrets
import signal
from pathlib import Path
from typing import Any

from pydantic import (
    TypeAdapter,
    ValidationError,
)
from starlette.applications import Starlette

from planher.application import with_app
from planher.clock import utc_now, utc_today
from planher.config import DEMO_DAYS, Settings
from planher.cycle_evaluation import FEDCYCLE_DATA, CycleFileError
from planher.energy.demo import bayes_rate, generate_demo_history
from planher.energy.store import training_samples
from planher.energy.trainer import retrain_if_due, train_and_store
from planher.energy.training_worker import work_on_training_queue
from planher.evaluation import ENERGY_EVALUATION_WOMEN, evaluation_report
from planher.schemas.fields import Email, NewPassword
from planher.schemas.responses import ModelSummaryOut
from planher.security.passwords import hash_password
from planher.storage.backup import backup, restore
from planher.storage.database import Database, with_database
from planher.storage.migrations import migrate
from planher.storage.queries import email_taken
from planher.storage.tables import daily_moods, period_records, user_profiles, users


def _admin_password() -> str:
    password = os.environ.get("PLANHER_ADMIN_PASSWORD")
    if password is None:
        password = getpass.getpass("Password for the admin: ")
        if getpass.getpass("Repeat it: ") != password:
            raise SystemExit("The two passwords differ.")
    try:
        return TypeAdapter(NewPassword).validate_python(password)
    except ValidationError as error:
        raise SystemExit(error.errors()[0]["msg"]) from None


async def create_admin(database: Database, settings: Settings, email: str) -> str:
    """Create an admin account, or make an existing account an admin."""
    await migrate(database)
    now = utc_now()
    if await email_taken(database, email):
        await database.execute(
            users.update().where(users.c.email == email).values(role="admin", updated_at=now)
        )
        return f"{email} is now an admin."
    password_hash = await hash_password(_admin_password(), settings.bcrypt_rounds)
    await database.execute(
        users.insert().values(
            email=email,
            password_hash=password_hash,
            role="admin",
            created_at=now,
            updated_at=now,
        )
    )
    return f"Created the admin {email}."


async def seed_demo(app: Starlette, days: int = DEMO_DAYS) -> dict[str, Any]:
    """A demo user with `days` days of generated periods and energy, her model trained."""
    database, now, today = app.state.database, utc_now(), utc_today()
    email = f"demo-{secrets.token_hex(3)}@planher.example"
    password = secrets.token_urlsafe(12)
    password_hash = await hash_password(password, app.state.settings.bcrypt_rounds)
    user_id = await database.fetch_val(
        users.insert()
        .values(
            email=email,
            password_hash=password_hash,
            name="Demo",
            role="user",
            created_at=now,
            updated_at=now,
        )
        .returning(users.c.id)
    )
    stamps = {"user_id": user_id, "created_at": now, "updated_at": now}
    await database.execute(user_profiles.insert().values(**stamps, height_cm=166, weight_kg=61.5))
    periods, moods = generate_demo_history(days, today, seed=secrets.randbelow(10**6))
    await database.execute(
        period_records.insert(),
        [{**stamps, "start_date": period.start, "end_date": period.end} for period in periods],
    )
    await database.execute(
        daily_moods.insert(),
        [{**stamps, "date": date, "energy_level": level} for date, level in moods],
    )
    as_of = utc_now()
    samples = await training_samples(database, user_id)
    model = await train_and_store(app, user_id, samples, as_of)
    await retrain_if_due(app, None)
    return {
        "email": email,
        "password": password,
        "periods": len(periods),
        "moods": len(moods),
        "model": model,
        "bayes_rate": bayes_rate(cycle.phase for cycle, _, _ in samples),
    }


async def train_until_stopped(app: Starlette) -> None:
    """The worker: trainings from the queue until SIGTERM or Ctrl-C, the one under way
    finished first."""
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for stopping_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stopping_signal, stop.set)
    await work_on_training_queue(app, stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m planher", description="PlanHer: the backend of a cycle-tracking app."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    admin_parser = commands.add_parser(
        "create-admin",
        help="create an admin account (password from PLANHER_ADMIN_PASSWORD or a prompt)",
    )
    admin_parser.add_argument("email")
    demo_parser = commands.add_parser(
        "demo", help="create a demo user with months of periods and energy, and print her login"
    )
    demo_parser.add_argument("--days", type=int, default=DEMO_DAYS)
    backup_parser = commands.add_parser(
        "backup",
        help="SQLite: write a consistent snapshot to FILE while the service runs; "
        "PostgreSQL: print the pg_dump command",
    )
    backup_parser.add_argument("file", type=Path)
    restore_parser = commands.add_parser(
        "restore",
        help="SQLite: replace the database with the backup FILE; PostgreSQL: print the "
        "pg_restore command. Refuses a database with accounts without --force",
    )
    evaluate_parser = commands.add_parser(
        "evaluate",
        help="print the next-period figures on FedCycleData (and on your own cycles) and the "
        "energy figures on the demo generator, beside their baselines",
    )
    evaluate_parser.add_argument("--fedcycle", type=Path, default=FEDCYCLE_DATA)
    evaluate_parser.add_argument(
        "--cycles",
        type=Path,
        action="append",
        default=[],
        metavar="CSV",
        help="a CSV of cycle lengths: header woman,cycle_length, one row per cycle in order",
    )
    evaluate_parser.add_argument(
        "--women", type=int, default=ENERGY_EVALUATION_WOMEN, help="generated women for energy"
    )
    commands.add_parser(
        "worker",
        help="train the models web processes queue under TRAINING=worker, until SIGTERM",
    )
    restore_parser.add_argument("file", type=Path)
    restore_parser.add_argument(
        "--force", action="store_true", help="replace a database that holds accounts"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_environ()

    if arguments.command == "migrate":
        applied = asyncio.run(with_database(settings, migrate))
        print(f"Applied {len(applied)} migration(s)." if applied else "Already up to date.")
    elif arguments.command == "create-admin":
        try:
            email = TypeAdapter(Email).validate_python(arguments.email)
        except ValidationError as error:
            raise SystemExit(error.errors()[0]["msg"]) from None
        print(asyncio.run(with_database(settings, lambda db: create_admin(db, settings, email))))
    elif arguments.command == "evaluate":
        try:
            print(evaluation_report(arguments.fedcycle, arguments.cycles, arguments.women))
        except (CycleFileError, OSError) as error:
            raise SystemExit(str(error)) from None
    elif arguments.command == "backup":
        print(backup(settings, arguments.file))
    elif arguments.command == "restore":
        print(restore(settings, arguments.file, arguments.force))
    elif arguments.command == "worker":
        # The worker itself trains what it takes (and what loading a model finds stale).
        asyncio.run(with_app(dataclasses.replace(settings, training="inline"), train_until_stopped))
    elif arguments.command == "demo":
        demo = asyncio.run(with_app(settings, lambda app: seed_demo(app, arguments.days)))
        model = ModelSummaryOut.model_validate(demo["model"])
        print(
            f"Demo user: {demo['email']}  password: {demo['password']}\n"
            f"{demo['periods']} periods and {demo['moods']} days of energy. Her model: version "
            f"{model.version}, {model.type}, forward-validated accuracy {model.cv_accuracy:.2f} "
            f"(Brier {model.brier_score:.3f}) against {model.baseline_accuracy:.2f} for always "
            f"guessing her most common level; the best any model could do on this generator "
            f"(its Bayes rate) is {demo['bayes_rate']:.2f}. "
            + (model.reason or "Her predictions use it.")
        )
