"""Backup and restore: SQLite's online backup, or pg_dump and pg_restore."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from planher.config import DB_TIMEOUT_S, Settings
from planher.storage.database import Database, with_database
from planher.storage.tables import users


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database's file, or None on PostgreSQL."""
    url = sa.make_url(settings.database_url)
    return Path(url.database) if url.drivername.startswith("sqlite") else None


def libpq_url(settings: Settings) -> str:
    """The PostgreSQL URL as pg_dump and pg_restore take it: no driver, no password (they
    read it from PGPASSWORD or ~/.pgpass, so it is never printed)."""
    url = sa.make_url(settings.database_url)
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)


def sqlite_accounts(path: Path) -> int:
    """How many accounts a SQLite database holds (0 for none, or a file with no tables)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone():
            return connection.execute("SELECT count(*) FROM users").fetchone()[0]
    return 0


def backup_sqlite(database_path: Path, target: Path) -> str:
    """A consistent snapshot while the service runs and writes: SQLite's online backup API
    copies, in one step, the pages of one read transaction (in WAL mode writers go on
    meanwhile). The copy is checked, made a self-contained file, then moved into place."""
    if not database_path.exists():
        raise SystemExit(f"There is no database at {database_path}.")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    with (
        contextlib.closing(sqlite3.connect(database_path)) as source,
        contextlib.closing(sqlite3.connect(partial)) as copy,
    ):
        source.execute(f"PRAGMA busy_timeout = {int(DB_TIMEOUT_S * 1000)}")
        source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
        if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise SystemExit("The copy failed its integrity check; nothing was written.")
    os.replace(partial, target)
    return (
        f"Backed up {database_path} to {target} ({target.stat().st_size / 1e6:.1f} MB, "
        f"{sqlite_accounts(target)} accounts) in {time.monotonic() - started:.1f} s."
    )


def restore_sqlite(backup: Path, database_path: Path, force: bool) -> str:
    """The backup's contents become the database (through SQLite's backup API, so a live
    WAL file cannot mix old pages in). Refuses a database with accounts unless forced."""
    if not backup.is_file():
        raise SystemExit(f"There is no backup at {backup}.")
    with contextlib.closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as source:
        try:
            checked = source.execute("PRAGMA integrity_check").fetchone()[0]
            migrations = source.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        except sqlite3.DatabaseError:
            raise SystemExit(f"{backup} is not a PlanHer SQLite backup.") from None
        if checked != "ok" or not migrations:
            raise SystemExit(f"{backup} is damaged or not a PlanHer backup; nothing was changed.")
        accounts = sqlite_accounts(database_path)
        if accounts and not force:
            raise SystemExit(
                f"{database_path} is not empty ({accounts} accounts): stop the service, then "
                "restore with --force to replace everything in it."
            )
        with contextlib.closing(sqlite3.connect(database_path)) as target:
            source.backup(target)
    return (
        f"Restored {backup} into {database_path} ({sqlite_accounts(database_path)} accounts). "
        "Pending migrations apply when the service starts."
    )


async def postgres_accounts(database: Database) -> int:
    try:
        return await database.fetch_val(sa.select(sa.func.count()).select_from(users))
    except sa.exc.ProgrammingError:  # no users table: a database never migrated
        return 0


def backup(settings: Settings, target: Path) -> str:
    database_path = sqlite_path(settings)
    if database_path is not None:
        return backup_sqlite(database_path, target)
    return (
        "On PostgreSQL the backup is pg_dump's (a consistent snapshot while the service runs):\n"
        f"  pg_dump --format=custom --no-owner --file {shlex.quote(str(target))} "
        f"--dbname {shlex.quote(libpq_url(settings))}"
    )


def restore(settings: Settings, backup_file: Path, force: bool) -> str:
    database_path = sqlite_path(settings)
    if database_path is not None:
        return restore_sqlite(backup_file, database_path, force)
    accounts = asyncio.run(with_database(settings, postgres_accounts))
    if accounts and not force:
        raise SystemExit(
            f"The database is not empty ({accounts} accounts): stop the service, then restore "
            "with --force to replace everything in it."
        )
    return (
        "On PostgreSQL the restore is pg_restore's (stop the service first):\n"
        f"  pg_restore --clean --if-exists --no-owner --single-transaction "
        f"--dbname {shlex.quote(libpq_url(settings))} {shlex.quote(str(backup_file))}"
    )
