"""The migration runner: migrations/NNNN_name.sql, applied once, in order, under a lock."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path

import sqlalchemy as sa

from planher.clock import utc_now
from planher.config import MIGRATION_LOCK_ID, MIGRATIONS_DIR
from planher.storage.database import Database, all_rows
from planher.storage.tables import schema_migrations

logger = logging.getLogger(__name__)

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    checksum VARCHAR(64) NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the files: refuse to start."""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


MIGRATION_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
DIALECT_ONLY_LINE = re.compile(r"^--\s*(sqlite|postgresql):\s*(.+)$")


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migration files have version {version:04d}")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def sql_statements(script: str, dialect: str) -> list[str]:
    """Split a SQL script into statements for `dialect`.

    Statements end with `;` at the end of a line. A comment line `-- <dialect>: statement;`
    is a statement only that dialect runs (PostgreSQL's identity columns, for instance).
    """
    lines = []
    for line in script.splitlines():
        dialect_only = DIALECT_ONLY_LINE.match(line.strip())
        if dialect_only:
            if dialect_only.group(1) == dialect:
                lines.append(dialect_only.group(2))
        elif not line.strip().startswith("--"):
            lines.append(line)
    statements = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [statement.strip() for statement in statements if statement.strip()]


def run_script(connection: sa.Connection, script: str) -> None:
    for statement in sql_statements(script, connection.dialect.name):
        connection.exec_driver_sql(statement)


def _lock_migrations(connection: sa.Connection) -> None:
    """Serialize concurrent runners for the rest of the current transaction.

    SQLite needs nothing more: its writes take turns, holding the write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")


def _applied_migrations(connection: sa.Connection) -> dict[int, dict]:
    return {row["version"]: row for row in all_rows(connection.execute(schema_migrations.select()))}


def check_applied_migrations(files: list[Migration], applied: dict[int, dict]) -> None:
    by_version = {migration.version: migration for migration in files}
    for version, row in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {version:04d}_{row['name']} is applied to the database but its "
                f"file is missing from {MIGRATIONS_DIR.name}/; restore it before starting"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {version:04d}_{migration.name}.sql was changed after it was "
                "applied (checksum differs); put a change in a new migration file instead"
            )


def _check_bookkeeping(connection: sa.Connection, files: list[Migration]) -> None:
    _lock_migrations(connection)
    connection.exec_driver_sql(SCHEMA_MIGRATIONS_DDL)
    check_applied_migrations(files, _applied_migrations(connection))


def _apply(connection: sa.Connection, migration: Migration) -> bool:
    """Apply `migration` with its bookkeeping row; False if another runner already did."""
    _lock_migrations(connection)
    if migration.version in _applied_migrations(connection):
        return False
    run_script(connection, migration.sql)
    connection.execute(
        schema_migrations.insert().values(
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=utc_now(),
        )
    )
    return True


async def migrate(database: Database, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations in order, each with its bookkeeping row in one transaction.

    Safe when several app instances start at once. Returns the versions applied now.
    """
    files = discover_migrations(directory)
    await database.write(_check_bookkeeping, files)
    newly_applied = []
    for migration in files:
        if await database.write(_apply, migration):
            newly_applied.append(migration.version)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
    return newly_applied
