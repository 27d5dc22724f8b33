"""The migration runner: migrations/NNNN_name.sql, applied once, in order, under a lock."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path

from planher.clock import utc_now
from planher.config import MIGRATION_LOCK_ID, MIGRATIONS_DIR
from planher.storage.database import Database
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


async def run_script(database: Database, script: str) -> None:
    for statement in sql_statements(script, database.dialect):
        await database.execute(statement)


async def _lock_migrations(database: Database) -> None:
    """Serialize concurrent runners for the rest of the current transaction.

    SQLite needs nothing more: our transactions begin IMMEDIATE, holding the write lock.
    """
    if database.dialect == "postgresql":
        await database.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")


async def _applied_migrations(database: Database) -> dict[int, dict]:
    rows = await database.fetch_all(schema_migrations.select())
    return {row["version"]: row for row in rows}


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


async def migrate(database: Database, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations in order, each with its bookkeeping row in one transaction.

    Safe when several app instances start at once. Returns the versions applied now.
    """
    files = discover_migrations(directory)
    newly_applied = []
    async with database.transaction():
        await _lock_migrations(database)
        await database.execute(SCHEMA_MIGRATIONS_DDL)
        check_applied_migrations(files, await _applied_migrations(database))
    for migration in files:
        async with database.transaction():
            await _lock_migrations(database)
            if migration.version in await _applied_migrations(database):
                continue  # another instance applied it while we waited
            await run_script(database, migration.sql)
            await database.execute(
                schema_migrations.insert().values(
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                    applied_at=utc_now(),
                )
            )
            newly_applied.append(migration.version)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
    return newly_applied
