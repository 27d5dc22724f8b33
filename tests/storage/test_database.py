"""The database layer: migrations, schema.sql, the Core tables and the SQLite pool,
on SQLite and PostgreSQL."""

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import (
    ROOT,
    fresh_database_url,
    make_settings,
    postgres_server_url,
    temporary_postgres_database,
    uvicorn_server,
)
from planher.application import create_app
from planher.clock import utc_today
from planher.config import DB_TIMEOUT_S, SQLITE_READER_BUSY_TIMEOUT_MS
from planher.storage.database import Database
from planher.storage.failures import DatabaseUnavailable
from planher.storage.migrations import MigrationError, discover_migrations, migrate, run_script
from planher.storage.tables import metadata, schema_migrations

DIALECTS = ["sqlite", "postgresql"]


@pytest.fixture(params=DIALECTS)
def empty_database_url(request, tmp_path):
    with fresh_database_url(request.param, tmp_path) as url:
        yield url


async def connected(url: str) -> Database:
    database = Database(url)
    await database.connect()
    return database


# ── describing a live schema ──


def type_family(declared: str) -> str:
    declared = declared.lower()
    families = [
        ("timestamp", "datetime"),
        ("date", "date"),
        ("int", "integer"),
        ("char", "string"),
        ("double", "float"),
        ("bool", "boolean"),
        ("bytea", "binary"),
    ]
    return next(family for fragment, family in families if fragment in declared)


CORE_TYPE_FAMILIES = [
    (sa.DateTime, "datetime"),
    (sa.Date, "date"),
    (sa.Integer, "integer"),
    (sa.String, "string"),
    (sa.Float, "float"),
    (sa.Boolean, "boolean"),
    (sa.LargeBinary, "binary"),
]

PG_COLUMNS = """
SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, c.column_default, c.is_identity,
       c.character_maximum_length,
       EXISTS (SELECT 1 FROM information_schema.table_constraints tc
               JOIN information_schema.key_column_usage k
                 ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema
               WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = c.table_name
                 AND k.column_name = c.column_name AND tc.table_schema = c.table_schema) AS pk
FROM information_schema.columns c WHERE c.table_schema = current_schema()"""
PG_INDEXES = """
SELECT t.relname AS table_name, i.relname AS index_name, ix.indisunique AS is_unique,
       array_to_string(array(
           SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord
       ), ',') AS columns
FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND NOT ix.indisprimary"""
PG_CONSTRAINTS = """
SELECT conrelid::regclass::text AS table_name, pg_get_constraintdef(oid) AS definition
FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"""
PG_FOREIGN_KEYS = """
SELECT tc.table_name, k.column_name, u.table_name AS ref_table, u.column_name AS ref_column,
       r.delete_rule
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage k
  ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema
JOIN information_schema.referential_constraints r
  ON r.constraint_name = tc.constraint_name AND r.constraint_schema = tc.table_schema
JOIN information_schema.constraint_column_usage u
  ON u.constraint_name = tc.constraint_name AND u.table_schema = tc.table_schema
WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()"""


async def describe(database: Database) -> dict:
    """Tables → columns (type family, nullable, primary key), indexes, foreign keys, and
    the dialect's full details (`exact`: DDL text, defaults, identities, checks)."""
    schema: dict = {"columns": {}, "indexes": {}, "foreign_keys": set(), "exact": set()}
    if database.dialect == "sqlite":
        master = await database.fetch_all(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        )
        for entry in master:
            if entry["tbl_name"] == "schema_migrations":
                continue
            # The DDL text, but for the spaces ALTER TABLE … ADD COLUMN leaves before a comma.
            ddl = re.sub(r" ([,)])", r"\1", " ".join(entry["sql"].split()))
            schema["exact"].add((entry["type"], entry["name"], ddl))
            if entry["type"] != "table":
                continue
            table = entry["name"]
            for column in await database.fetch_all(f"PRAGMA table_info({table})"):
                nullable = not column["notnull"] and not column["pk"]
                schema["columns"][table, column["name"]] = (
                    type_family(column["type"]),
                    nullable,
                    bool(column["pk"]),
                )
            for index in await database.fetch_all(f"PRAGMA index_list({table})"):
                if index["origin"] == "c":
                    parts = await database.fetch_all(f"PRAGMA index_info({index['name']})")
                    schema["indexes"][table, index["name"]] = (
                        bool(index["unique"]),
                        tuple(part["name"] for part in parts),
                    )
            for key in await database.fetch_all(f"PRAGMA foreign_key_list({table})"):
                schema["foreign_keys"].add(
                    (table, key["from"], key["table"], key["to"], key["on_delete"])
                )
        return schema
    for column in await database.fetch_all(PG_COLUMNS):
        if column["table_name"] == "schema_migrations":
            continue
        schema["columns"][column["table_name"], column["column_name"]] = (
            type_family(column["data_type"]),
            column["is_nullable"] == "YES",
            column["pk"],
        )
        schema["exact"].add(tuple(column.items()))
    for index in await database.fetch_all(PG_INDEXES):
        schema["indexes"][index["table_name"], index["index_name"]] = (
            index["is_unique"],
            tuple(index["columns"].split(",")),
        )
    for key in await database.fetch_all(PG_FOREIGN_KEYS):
        schema["foreign_keys"].add(tuple(key.values()))
    for constraint in await database.fetch_all(PG_CONSTRAINTS):
        if constraint["table_name"] != "schema_migrations":
            schema["exact"].add((constraint["table_name"], constraint["definition"]))
    return schema


def describe_core_tables() -> dict:
    schema: dict = {"columns": {}, "indexes": {}, "foreign_keys": set()}
    for table in metadata.sorted_tables:
        if table.name == "schema_migrations":
            continue
        for column in table.columns:
            family = next(f for kind, f in CORE_TYPE_FAMILIES if isinstance(column.type, kind))
            schema["columns"][table.name, column.name] = (
                family,
                column.nullable,
                column.primary_key,
            )
            for key in column.foreign_keys:
                schema["foreign_keys"].add(
                    (
                        table.name,
                        column.name,
                        key.column.table.name,
                        key.column.name,
                        key.ondelete,
                    )
                )
        for index in table.indexes:
            schema["indexes"][table.name, index.name] = (
                bool(index.unique),
                tuple(column.name for column in index.columns),
            )
    return schema


async def schema_built_by(url: str, build: str) -> dict:
    database = await connected(url)
    try:
        if build == "migrations":
            await migrate(database)
        else:
            await database.write(run_script, (ROOT / "schema.sql").read_text(encoding="utf-8"))
    finally:
        await database.disconnect()
    # Fresh connections: SQLite's PRAGMAs can answer from a connection's stale schema cache.
    database = await connected(url)
    try:
        return await describe(database)
    finally:
        await database.disconnect()


# ── schema parity ──


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_and_schema_sql_build_the_same_schema(dialect, tmp_path):
    with (
        fresh_database_url(dialect, tmp_path) as first,
        fresh_database_url(dialect, tmp_path) as second,
    ):
        migrated = asyncio.run(schema_built_by(first, "migrations"))
        from_schema_sql = asyncio.run(schema_built_by(second, "schema.sql"))
    assert migrated["columns"], "the migrations created no tables"
    assert migrated == from_schema_sql


def test_core_tables_match_the_migrated_schema(empty_database_url):
    migrated = asyncio.run(schema_built_by(empty_database_url, "migrations"))
    core = describe_core_tables()
    assert migrated["columns"] == core["columns"]
    assert migrated["indexes"] == core["indexes"]
    assert {key[:4] + (key[4].upper(),) for key in migrated["foreign_keys"]} == {
        key[:4] + (key[4].upper(),) for key in core["foreign_keys"]
    }


def test_every_user_owned_table_cascades_on_account_deletion():
    owned = {
        table.name
        for table in metadata.tables.values()
        if "user_id" in table.c and table.name != "audit_events"
    }
    cascading = {key[0] for key in describe_core_tables()["foreign_keys"] if key[4] == "CASCADE"}
    assert owned == cascading


# ── the migration runner ──


def test_migrating_twice_applies_nothing_the_second_time(empty_database_url):
    async def twice():
        database = await connected(empty_database_url)
        try:
            first = await migrate(database)
            second = await migrate(database)
            rows = await database.fetch_all(schema_migrations.select())
            return first, second, rows
        finally:
            await database.disconnect()

    first, second, rows = asyncio.run(twice())
    versions = [migration.version for migration in discover_migrations()]
    assert first == versions and second == []
    assert [row["version"] for row in rows] == versions
    assert all(len(row["checksum"]) == 64 and row["applied_at"] for row in rows)


def test_two_runners_starting_at_once_apply_each_migration_once(empty_database_url):
    async def race():
        first, second = await connected(empty_database_url), await connected(empty_database_url)
        try:
            results = await asyncio.gather(migrate(first), migrate(second))
            count = await first.fetch_val("SELECT count(*) FROM schema_migrations")
            return results, count
        finally:
            await first.disconnect()
            await second.disconnect()

    (applied_by_first, applied_by_second), count = asyncio.run(race())
    versions = [migration.version for migration in discover_migrations()]
    assert sorted(applied_by_first + applied_by_second) == versions
    assert count == len(versions)


@pytest.fixture
def migrations_copy(tmp_path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", folder)
    return folder


def migrate_from(url: str, folder: Path) -> list[int]:
    async def work():
        database = await connected(url)
        try:
            return await migrate(database, folder)
        finally:
            await database.disconnect()

    return asyncio.run(work())


def test_a_migration_changed_after_it_was_applied_refuses_to_start(
    empty_database_url, migrations_copy
):
    migrate_from(empty_database_url, migrations_copy)
    first = sorted(migrations_copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate_from(empty_database_url, migrations_copy)


def test_a_missing_applied_migration_refuses_to_start(empty_database_url, migrations_copy):
    migrate_from(empty_database_url, migrations_copy)
    sorted(migrations_copy.glob("*.sql"))[0].unlink()
    with pytest.raises(MigrationError, match="file is missing"):
        migrate_from(empty_database_url, migrations_copy)


def test_a_new_migration_file_is_applied_in_one_transaction_with_its_row(
    empty_database_url, migrations_copy
):
    migrate_from(empty_database_url, migrations_copy)
    (migrations_copy / "0900_broken.sql").write_text(
        "CREATE TABLE half_done (id INTEGER);\nTHIS IS NOT SQL;\n"
    )
    with pytest.raises(sa.exc.DBAPIError):
        migrate_from(empty_database_url, migrations_copy)
    (migrations_copy / "0900_broken.sql").write_text("CREATE TABLE half_done (id INTEGER);\n")
    assert migrate_from(empty_database_url, migrations_copy) == [900]


def test_the_app_refuses_to_start_when_an_applied_migration_changed(tmp_path):
    with fresh_database_url("sqlite", tmp_path) as url:
        settings = make_settings(url)
        with TestClient(create_app(settings)):
            pass

        async def tamper():
            database = await connected(url)
            await database.execute(schema_migrations.update().values(checksum="0" * 64))
            await database.disconnect()

        asyncio.run(tamper())
        with pytest.raises(MigrationError):
            with TestClient(create_app(settings)):
                pass


def test_the_migrate_command_applies_pending_migrations_then_reports_up_to_date(tmp_path):
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    command = [sys.executable, "-m", "planher", "migrate"]
    options = {"cwd": ROOT, "env": environment, "capture_output": True, "text": True, "timeout": 60}
    first = subprocess.run(command, **options)
    second = subprocess.run(command, **options)
    assert first.returncode == 0, first.stderr
    assert "Applied" in first.stdout
    assert second.stdout.strip() == "Already up to date."


# ── the SQLite pool ──


SQLITE_PRAGMA_NAMES = ("foreign_keys", "journal_mode", "synchronous", "busy_timeout")


def sqlite_pragmas(connection: sa.Connection) -> tuple:
    return tuple(
        connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in SQLITE_PRAGMA_NAMES
    )


def test_sqlite_writer_and_reader_connections_have_the_pragmas(tmp_path):
    async def pragmas():
        database = await connected(f"sqlite:///{tmp_path / 'pool.db'}")
        try:
            return await database.write(sqlite_pragmas), await database.read(sqlite_pragmas)
        finally:
            await database.disconnect()

    writer, reader = asyncio.run(pragmas())
    assert writer == (1, "wal", 2, int(DB_TIMEOUT_S * 900))
    assert reader == (1, "wal", 2, SQLITE_READER_BUSY_TIMEOUT_MS)


def count_then_insert(connection: sa.Connection, n: int) -> int:
    """A read-then-write unit: without the one writer (and BEGIN IMMEDIATE) two of these
    could deadlock on the read → write upgrade."""
    before = connection.exec_driver_sql("SELECT count(*) FROM counter").scalar()
    connection.exec_driver_sql(f"INSERT INTO counter VALUES ({n})")
    if n % 5 == 0:
        raise ValueError(f"unit {n} fails after its insert")
    return before


def test_units_of_work_that_arrive_together_share_a_commit_and_fail_alone(
    empty_database_url,
):
    """Units queued while the writer is busy are committed as one group, each in its own
    savepoint: the failing ones leave nothing, the others all land. On PostgreSQL each
    unit is a transaction of its own; the outcome is the same."""

    async def forty_units():
        database = await connected(empty_database_url)
        try:
            await database.execute("CREATE TABLE counter (n INTEGER)")
            release = threading.Event()
            # SQLite: the writer is busy with the first unit while the other 39 arrive.
            first = asyncio.ensure_future(database.write(lambda connection: release.wait(5)))
            await asyncio.sleep(0.05)
            hops_before = database.writer_hops
            units = asyncio.gather(
                *(database.write(count_then_insert, n) for n in range(1, 40)),
                return_exceptions=True,
            )
            await asyncio.sleep(0.05)
            release.set()
            await first
            outcomes = await units
            hops = database.writer_hops - hops_before
            stored = await database.fetch_all("SELECT n FROM counter ORDER BY n")
            return outcomes, [row["n"] for row in stored], hops
        finally:
            await database.disconnect()

    outcomes, stored, hops = asyncio.run(forty_units())
    failed = [n for n, outcome in enumerate(outcomes, 1) if isinstance(outcome, ValueError)]
    assert failed == [5, 10, 15, 20, 25, 30, 35]
    assert stored == [n for n in range(1, 40) if n % 5]
    assert hops == (39 if empty_database_url.startswith("sqlite") else 0)


def test_the_sqlite_writer_commits_a_waiting_group_at_once(tmp_path):
    async def grouped():
        database = await connected(f"sqlite:///{tmp_path / 'group.db'}")
        try:
            await database.execute("CREATE TABLE counter (n INTEGER)")
            commits_before = database.writer_commits
            release = threading.Event()
            first = asyncio.ensure_future(database.write(lambda connection: release.wait(5)))
            await asyncio.sleep(0.05)
            units = asyncio.gather(*(database.write(count_then_insert, n) for n in (1, 2, 3)))
            await asyncio.sleep(0.05)
            release.set()
            await first
            counts_before = await units
            return counts_before, database.writer_commits - commits_before
        finally:
            await database.disconnect()

    counts_before, commits = asyncio.run(grouped())
    assert counts_before == [0, 1, 2]  # each unit sees the ones before it in its group
    assert commits == 2  # the first unit's, then one for the three that waited


# ── failures: every one gives its connection back ──

PARENT_AND_CHILD_TABLES = (
    "CREATE TABLE parents (id INTEGER PRIMARY KEY)",
    # Checked at COMMIT, so a child without its parent makes the COMMIT itself fail.
    "CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER "
    "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
)


async def eventually_whole(database: Database) -> int:
    """Connections still checked out once the discarded ones are closed (within 5 s)."""
    for _ in range(100):
        if database.connections_in_use == 0:
            break
        await asyncio.sleep(0.05)
    return database.connections_in_use


def run_statements(connection: sa.Connection, statements: list[str]) -> None:
    for statement in statements:
        connection.exec_driver_sql(statement)


async def refused(database: Database, statements: list[str]) -> str:
    """Run `statements` as one unit of work, which must fail; its error's class name."""
    try:
        await database.write(run_statements, statements)
    except Exception as error:
        return type(error).__name__
    raise AssertionError(f"{statements} did not fail")


@contextlib.asynccontextmanager
async def write_lock_held_elsewhere(url: str):
    """SQLite: another program holds the write lock. PostgreSQL: every statement of the
    service's transactions hits a server-side statement timeout instead."""
    if url.startswith("sqlite"):
        other = sqlite3.connect(sa.make_url(url).database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield ["INSERT INTO parents VALUES (1)"]
        finally:
            other.execute("ROLLBACK")
            other.close()
    else:
        yield ["SET LOCAL statement_timeout = '1ms'", "SELECT pg_sleep(0.05)"]


async def connect_within(database: Database, attempts: int) -> None:
    """Connect, trying again while a loaded machine makes the first connection to a new
    database outlast a tiny timeout (what the test times is what follows)."""
    for attempt in range(attempts):
        try:
            return await database.connect()
        except DatabaseUnavailable:
            if attempt == attempts - 1:
                raise


def test_a_thousand_failed_transactions_leave_the_pool_whole(empty_database_url):
    async def fail_a_thousand_times():
        tables = Database(empty_database_url)
        await tables.connect()
        try:
            for statement in PARENT_AND_CHILD_TABLES:
                await tables.execute(statement)
        finally:
            await tables.disconnect()
        database = Database(empty_database_url, timeout_s=0.02)
        await connect_within(database, attempts=5)
        try:
            errors = collections.Counter()
            async with write_lock_held_elsewhere(empty_database_url) as blocked:
                for _ in range(334):  # BEGIN (SQLite) or a statement (PostgreSQL) times out
                    errors["lock or timeout: " + await refused(database, blocked)] += 1
            for _ in range(333):  # a statement fails
                errors[
                    "statement: " + await refused(database, ["INSERT INTO nowhere VALUES (1)"])
                ] += 1
            for _ in range(333):  # the COMMIT fails
                errors[
                    "commit: " + await refused(database, ["INSERT INTO children VALUES (1, 42)"])
                ] += 1
            in_use = await eventually_whole(database)
            started = time.monotonic()
            await database.write(
                run_statements,
                ["INSERT INTO parents VALUES (42)", "INSERT INTO children VALUES (1, 42)"],
            )
            seconds = time.monotonic() - started
            stored = await database.fetch_val("SELECT count(*) FROM children")
            return errors, in_use, seconds, stored
        finally:
            await database.disconnect()

    errors, in_use, seconds, stored = asyncio.run(fail_a_thousand_times())
    assert sum(errors.values()) == 1000, errors
    assert errors["lock or timeout: DatabaseUnavailable"] == 334, errors
    # Under load a reconnect can outlast the 20 ms timeout: that call is a 503 instead.
    assert errors["commit: IntegrityError"] >= 300, errors
    assert {kind.split(": ")[1] for kind in errors} <= {
        "DatabaseUnavailable",
        "IntegrityError",
        "OperationalError",
        "ProgrammingError",
    }, errors
    assert in_use == 0
    assert seconds < 1 and stored == 1


def postgres_only(url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("a PostgreSQL server's own failure")


def test_backends_terminated_mid_transaction_cost_that_transaction_only(empty_database_url):
    postgres_only(empty_database_url)

    async def terminate_mid_transaction():
        database = await connected(empty_database_url)
        try:
            await database.execute(PARENT_AND_CHILD_TABLES[0])
            # Several pooled connections, all terminated below.
            await asyncio.gather(*(database.fetch_val("SELECT pg_sleep(0.05)") for _ in range(4)))
            with pytest.raises(DatabaseUnavailable):
                await database.write(
                    run_statements,
                    [
                        "INSERT INTO parents VALUES (1)",
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                        "datname = current_database() AND pid <> pg_backend_pid()",
                        "SELECT pg_terminate_backend(pg_backend_pid())",
                        "INSERT INTO parents VALUES (2)",
                    ],
                )
            answers = [await database.fetch_val("SELECT count(*) FROM parents") for _ in range(8)]
            return answers, await eventually_whole(database)
        finally:
            await database.disconnect()

    answers, in_use = asyncio.run(terminate_mid_transaction())
    assert answers == [0] * 8  # nothing of the broken transaction, every later call answers
    assert in_use == 0


def test_a_call_that_does_not_answer_in_time_is_abandoned_and_its_connection_discarded(
    empty_database_url,
):
    postgres_only(empty_database_url)

    async def too_slow():
        database = Database(empty_database_url, timeout_s=0.3)
        await database.connect()
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="did not answer within"):
                await database.fetch_val("SELECT pg_sleep(30)")
            waited = time.monotonic() - started
            return waited, await eventually_whole(database), await database.fetch_val("SELECT 1")
        finally:
            await database.disconnect()

    waited, in_use, answer = asyncio.run(too_slow())
    assert waited < 3  # abandoned at 0.3 s, not after the 30 s the statement wanted
    assert in_use == 0 and answer == 1


def test_a_read_only_sqlite_file_refuses_writes_with_503s_and_recovers(tmp_path):
    path = tmp_path / "read-only.db"

    async def read_only_for_a_while():
        database = Database(f"sqlite:///{path}", timeout_s=0.5)
        await database.connect()
        try:
            await database.execute(PARENT_AND_CHILD_TABLES[0])
            await database.execute("INSERT INTO parents VALUES (1)")
            files = [str(path), f"{path}-wal"]  # never -shm: SQLite maps it into memory
            if subprocess.run(["chattr", "+i", *files], capture_output=True).returncode:
                pytest.skip("chattr +i (an immutable file) is not available here")
            try:
                failures = [
                    await refused(database, [f"INSERT INTO parents VALUES ({n})"])
                    for n in range(2, 20)
                ]
                read = await database.fetch_val(
                    sa.select(sa.func.count()).select_from(sa.table("parents"))
                )
            finally:
                subprocess.run(["chattr", "-i", *files], check=True)
            in_use = await eventually_whole(database)
            await database.execute("INSERT INTO parents VALUES (100)")
            return failures, read, in_use, await database.fetch_val("SELECT count(*) FROM parents")
        finally:
            await database.disconnect()

    failures, read, in_use, count = asyncio.run(read_only_for_a_while())
    assert set(failures) == {"DatabaseUnavailable"}
    assert read == 1 and in_use == 0 and count == 2


# ── backup and restore ──

WRITER_PASSWORD = "correct horse battery"


class MoodWriter(threading.Thread):
    """A woman logging a mood a request, as fast as the server takes them, each on a new
    date; remembers when each write was acknowledged."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=base, timeout=10)
        self.email = f"writer-{time.monotonic_ns()}@example.org"
        body = {"email": self.email, "password": WRITER_PASSWORD}
        assert self.http.post("/auth/register", json=body).status_code == 201
        token = self.http.post("/auth/login", json=body).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.acknowledged: list[tuple[float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        today = utc_today()
        for back in itertools.count(1):
            if self.stop.is_set():
                return
            date = (today - dt.timedelta(days=back)).isoformat()
            response = self.http.post("/moods/", json={"date": date, "energy_level": back % 3})
            if response.status_code == 201:
                self.acknowledged.append((time.monotonic(), date))

    def acknowledged_before(self, moment: float) -> set[str]:
        return {date for at, date in self.acknowledged if at < moment}


@contextlib.contextmanager
def writing(base: str):
    writer = MoodWriter(base)
    writer.start()
    time.sleep(1.0)  # well under way
    try:
        yield writer
    finally:
        time.sleep(0.5)  # and still writing after the backup
        writer.stop.set()
        writer.join(timeout=30)
        writer.http.close()


def planher_command(database_url: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "planher", *arguments],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_she_signs_in_to(database_url: str, writer: MoodWriter, log: Path) -> int:
    """Serve the database and sign the writer in: how many moods she sees."""
    with uvicorn_server(database_url, log) as (base, _):
        body = {"email": writer.email, "password": WRITER_PASSWORD}
        token = httpx.post(f"{base}/auth/login", json=body).json()["access_token"]
        moods = httpx.get(f"{base}/moods/", headers={"Authorization": f"Bearer {token}"})
        return int(moods.headers["X-Total-Count"])


def test_a_sqlite_backup_under_write_load_restores_every_write_acknowledged_before_it(tmp_path):
    live, copy = f"sqlite:///{tmp_path / 'live.db'}", tmp_path / "backup.db"
    with uvicorn_server(live, tmp_path / "live.log") as (base, _), writing(base) as writer:
        began = time.monotonic()
        backup = planher_command(live, "backup", str(copy))
        assert backup.returncode == 0, backup.stderr
        assert backup.stdout.startswith("Backed up")
    acknowledged = writer.acknowledged_before(began)
    assert len(acknowledged) > 20, "the writer hardly wrote"

    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    result = planher_command(restored, "restore", str(copy))
    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "restored.db")) as connection:
        dates = {row[0] for row in connection.execute("SELECT date FROM daily_moods")}
    assert acknowledged <= dates
    assert assert_she_signs_in_to(restored, writer, tmp_path / "restored.log") == len(dates)


def test_restore_refuses_a_database_with_accounts_unless_forced(tmp_path):
    first, second = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'second.db'}"
    for url in (first, second):
        with TestClient(create_app(make_settings(url))) as client:
            email = f"someone-{uuid.uuid4().hex[:8]}@example.org"
            body = {"email": email, "password": WRITER_PASSWORD}
            assert client.post("/auth/register", json=body).status_code == 201
    assert planher_command(first, "backup", str(tmp_path / "first.backup")).returncode == 0
    refused = planher_command(second, "restore", str(tmp_path / "first.backup"))
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert (
        planher_command(second, "restore", "--force", str(tmp_path / "first.backup")).returncode
        == 0
    )
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    damaged = planher_command(f"sqlite:///{tmp_path / 'third.db'}", "restore", str(not_a_backup))
    assert damaged.returncode != 0 and "not a PlanHer" in damaged.stderr


def test_on_postgresql_the_printed_pg_dump_and_pg_restore_commands_round_trip_under_load(
    tmp_path,
):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump and pg_restore are not installed (Debian: postgresql-client)")
    server = postgres_server_url()
    with temporary_postgres_database(server) as live, temporary_postgres_database(server) as target:
        copy = tmp_path / "planher.dump"
        with uvicorn_server(live, tmp_path / "live.log") as (base, _), writing(base) as writer:
            began = time.monotonic()
            printed = planher_command(live, "backup", str(copy))
            assert printed.returncode == 0, printed.stderr
            dump = subprocess.run(
                shlex.split(printed.stdout.strip().splitlines()[-1]), capture_output=True, text=True
            )
            assert dump.returncode == 0, dump.stderr
        acknowledged = writer.acknowledged_before(began)
        assert len(acknowledged) > 20, "the writer hardly wrote"

        printed = planher_command(target, "restore", str(copy))
        assert printed.returncode == 0, printed.stderr
        command = shlex.split(printed.stdout.strip().splitlines()[-1])
        assert command[0] == "pg_restore"
        restore = subprocess.run(command, capture_output=True, text=True)
        assert restore.returncode == 0, restore.stderr
        dates = {
            row["date"].isoformat()
            for row in asyncio.run(fetch(target, "SELECT date FROM daily_moods"))
        }
        assert acknowledged <= dates
        refused = planher_command(target, "restore", str(copy))
        assert refused.returncode != 0 and "--force" in refused.stderr
        assert assert_she_signs_in_to(target, writer, tmp_path / "restored.log") == len(dates)


async def fetch(url: str, query: str) -> list:
    connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()
