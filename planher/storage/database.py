"""SQLAlchemy's engines behind one small facade: SQLite (one writer) or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from planher.config import (
    DB_POOL_SIZE,
    DB_TIMEOUT_S,
    LARGE_READ_CHUNK_ROWS,
    SQLITE_PRAGMAS,
    SQLITE_READER_BUSY_TIMEOUT_MS,
    Settings,
)
from planher.metrics import (
    DATABASE_CALL_DURATION,
    DATABASE_CONNECTION_WAIT,
    DATABASE_CONNECTIONS_IN_USE,
)
from planher.storage.failures import (
    DatabaseUnavailable,
    driver_url,
    is_unavailable,
    masked_url,
    unavailable_because,
)
from planher.storage.held_connections import HeldConnections
from planher.storage.sqlite_writer import SQLiteWriter, UnitOfWork
from planher.storage.tables import schema_migrations

# How both drivers' "that row already exists" reaches us.
UNIQUE_VIOLATIONS = sa.exc.IntegrityError


def _configure_sqlite(busy_timeout_ms: int, *pragmas: str) -> Callable[[Any, Any], None]:
    """A `connect` event listener: SQLITE_PRAGMAS on each new connection, and the driver's
    own transaction handling off, so that ours (`BEGIN IMMEDIATE`) is the only one."""

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout = {busy_timeout_ms}", *pragmas):
            cursor.execute(pragma)
        cursor.close()

    return on_connect


def _without_statement_caches(
    url: sa.URL, connect_args: dict[str, Any]
) -> tuple[sa.URL, dict[str, Any]]:
    """For a pooler in transaction mode (PgBouncer before 1.21), where one connection's
    statements may run on different servers: neither asyncpg nor SQLAlchemy keeps prepared
    statements between calls, and each one prepared gets a name no other can take."""
    url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    return url, {
        **connect_args,
        "statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__planher_{uuid.uuid4().hex}__",
    }


def _begin_immediately(connection: sa.Connection) -> None:
    """A `begin` event listener: SQLite transactions take the write lock when they begin,
    so two read-then-write transactions queue instead of deadlocking at their first write."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


Query = sa.Executable | str  # a Core statement, or plain SQL without parameters


def _as_dicts(names: Sequence[str], rows: Iterable[Sequence]) -> list[dict[str, Any]]:
    """Rows as plain dicts: cheaper to build and to read than SQLAlchemy's Row objects."""
    return [dict(zip(names, row, strict=True)) for row in rows]


def all_rows(result: sa.CursorResult) -> list[dict[str, Any]]:
    return _as_dicts(list(result.keys()), result.all())


def first_row(result: sa.CursorResult) -> dict[str, Any] | None:
    row = result.mappings().first()
    return None if row is None else dict(row)


def _nothing(result: sa.CursorResult) -> None:
    return None


def _leaves_connection_unknown(error: BaseException) -> bool:
    """Whether a connection's state is unknown after `error`: it is discarded, not reused."""
    return is_unavailable(error) or isinstance(error, DatabaseUnavailable | asyncio.CancelledError)


def _with_arguments(work: Callable[..., Any], arguments: tuple) -> UnitOfWork:
    return lambda connection: work(connection, *arguments)


def _change_nothing(connection: sa.Connection) -> None:
    connection.execute(schema_migrations.delete().where(sa.false()))


@contextlib.contextmanager
def _measured(kind: str):
    """A database call in the metrics: running now, and how long it took."""
    started = time.perf_counter()
    DATABASE_CONNECTIONS_IN_USE.inc()
    try:
        yield
    finally:
        DATABASE_CONNECTIONS_IN_USE.dec()
        DATABASE_CALL_DURATION.labels(kind=kind).observe(time.perf_counter() - started)


def background_task(coroutine: Awaitable[Any]) -> asyncio.Task:
    """Run `coroutine` as a task of its own, outside the caller's context: in particular
    outside any transaction the caller has open. Keep a reference to it."""
    return asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())


class Database:
    """The database as handlers use it. A request's work that belongs together is a unit of
    work: one plain function over a SQLAlchemy `Connection`, written once for both
    databases, run by `write` (in a transaction) or `read` (without one). Single statements
    have `fetch_all`, `fetch_one`, `fetch_val` and `execute`; reads of many rows
    `fetch_large`, which reads them off the event loop.

    Every call is bounded by the timeout; a failed call gives its connection back, a call
    that timed out or lost its server discards it, and either way the client gets
    DatabaseUnavailable (503).

    On SQLite every write runs on one writer thread (SQLiteWriter: one hop per unit of work,
    group commit), and reads run inline on the event loop on a read-only connection of a
    synchronous engine: in WAL mode a read never waits for the writer, and an indexed read
    takes less time than the hop to a thread and back. On PostgreSQL (asyncpg) a unit of
    work runs on one pooled connection, reads and single statements in autocommit mode: no
    BEGIN and ROLLBACK round trips around them.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = DB_TIMEOUT_S,
        pool_size: int = DB_POOL_SIZE,
        statement_cache: bool = True,
    ) -> None:
        self.url, self.display_url = url, masked_url(url)
        self.timeout_s, self.pool_size = timeout_s, pool_size
        self.statement_cache = statement_cache
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.engine: AsyncEngine | None = None  # PostgreSQL's
        self._large_reader: sa.Engine | None = None  # SQLite's, for large reads on a thread
        self._held_engine: AsyncEngine | None = None  # PostgreSQL's, for the held connections
        self._held: HeldConnections | None = None  # PostgreSQL's, for reads
        self._reader: sa.Engine | None = None
        self._writer: SQLiteWriter | None = None
        self._discarding: set[asyncio.Task] = set()

    # — connecting —

    async def connect(self) -> None:
        """Open the engines and check that the database answers (DatabaseUnavailable if
        not; sa.exc.ArgumentError for a URL that names no database we serve)."""
        url = driver_url(self.url)
        options: dict[str, Any] = {
            "pool_size": self.pool_size,
            "max_overflow": 0,
            "pool_timeout": self.timeout_s,
            "hide_parameters": True,  # errors and logs never carry her data
        }
        try:
            if self.dialect == "postgresql":
                connect_args: dict[str, Any] = {"timeout": self.timeout_s}
                if not self.statement_cache:
                    url, connect_args = _without_statement_caches(url, connect_args)
                self.engine = create_async_engine(url, connect_args=connect_args, **options)
                # Behind a pooler in transaction mode a statement and its preparation must
                # share one transaction, or they may reach two servers.
                self._held_engine = (
                    self.engine.execution_options(isolation_level="AUTOCOMMIT")
                    if self.statement_cache
                    else self.engine
                )
                self._held = HeldConnections(
                    max(1, self.pool_size // 2), self._open_held, self._discard
                )
                async with self._connection(self.engine):  # fails here, not on a request
                    pass
            else:
                self._connect_sqlite(url, options)
        except BaseException:
            await self.disconnect()
            raise

    def _connect_sqlite(self, url: sa.URL, options: dict[str, Any]) -> None:
        # SQLite itself gives up on a lock a little before our timeout: a clean error
        # rather than an abandoned connection.
        on_connect = _configure_sqlite(int(self.timeout_s * 900))
        # Large reads run whole on a worker thread, on read-only connections of their own:
        # they never take the write lock nor hold up the event loop, and a read cancelled
        # halfway (a shutdown) finishes on its thread instead of leaving a driver thread
        # waited on for ever, as aiosqlite's connections could.
        self._large_reader = sa.create_engine(
            url,
            pool_size=self.pool_size,
            max_overflow=0,
            pool_timeout=self.timeout_s,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
        )
        sa.event.listen(
            self._large_reader,
            "connect",
            _configure_sqlite(int(self.timeout_s * 900), "PRAGMA query_only = ON"),
        )
        writer_engine = sa.create_engine(
            url,
            poolclass=sa.pool.StaticPool,  # the writer's one connection
            connect_args={"check_same_thread": False},  # closed from the loop's thread
            hide_parameters=True,
        )
        sa.event.listen(writer_engine, "connect", on_connect)
        sa.event.listen(writer_engine, "begin", _begin_immediately)
        self._reader = sa.create_engine(
            url,
            poolclass=sa.pool.StaticPool,  # one connection, only ever used on the loop
            connect_args={"check_same_thread": False},
            hide_parameters=True,
        )
        sa.event.listen(
            self._reader,
            "connect",
            _configure_sqlite(SQLITE_READER_BUSY_TIMEOUT_MS, "PRAGMA query_only = ON"),
        )
        # The database answers (or says why not) before the writer's lock file is made.
        self._read_inline(lambda connection: connection.execute(sa.select(1)))
        self._writer = SQLiteWriter(writer_engine, url.database, self.timeout_s)

    async def disconnect(self) -> None:
        if self._discarding:
            await asyncio.wait(set(self._discarding), timeout=self.timeout_s)
        if self._held is not None:
            await self._held.close()
        if self.engine is not None:
            await self.engine.dispose()
        if self._large_reader is not None:
            self._large_reader.dispose()
        if self._writer is not None:
            writer = self._writer
            await asyncio.to_thread(writer.close)
            writer.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()
        self.engine = self._held_engine = self._held = None
        self._reader = self._writer = self._large_reader = None

    async def check_writable(self) -> None:
        """DatabaseUnavailable unless a write could begin now. The probe is a write that
        changes nothing: a read-only database refuses it, and on SQLite it waits for the
        write lock, which another program may hold longer than the timeout."""
        await self.write(_change_nothing)

    @property
    def connections_in_use(self) -> int:
        """Pooled connections in use now (held ones waiting for a read are not): 0 whenever
        no call is running."""
        if self._large_reader is not None:
            return self._large_reader.pool.checkedout()
        if self.engine is None:
            return 0
        held_idle = 0 if self._held is None else self._held.open_and_idle
        return self.engine.pool.checkedout() - held_idle

    @property
    def writer_hops(self) -> int:
        """Units of work handed to SQLite's writer thread so far (0 on PostgreSQL)."""
        return 0 if self._writer is None else self._writer.hops

    @property
    def writer_commits(self) -> int:
        """Groups of units of work SQLite's writer has committed so far (0 on PostgreSQL)."""
        return 0 if self._writer is None else self._writer.commits

    # — the calls handlers make —

    async def write(self, work: UnitOfWork, *arguments: Any) -> Any:
        """`work(connection, *arguments)` in one transaction, committed when it returns or,
        if it raises, not at all; its result once the commit is durable."""
        if arguments:
            work = _with_arguments(work, arguments)
        with _measured("write"):
            if self._writer is not None:
                return await self._writer.run(work)

            async def in_a_transaction(connection: AsyncConnection) -> Any:
                async with connection.begin():
                    return await connection.run_sync(work)

            async with self._connection(self.engine) as connection:
                return await self._call(in_a_transaction(connection))

    async def read(self, work: UnitOfWork, *arguments: Any) -> Any:
        """`work(connection, *arguments)` for reads that need no transaction: on SQLite
        inline, on PostgreSQL on one connection in autocommit mode."""
        if arguments:
            work = _with_arguments(work, arguments)
        with _measured("read"):
            if self._reader is not None:
                return self._read_inline(work)
            return await self._on_held(lambda connection: connection.run_sync(work))

    # `values` fill a statement's bind parameters: a hot statement is built once, with
    # sa.bindparam, rather than composed anew on every call.

    async def fetch_all(self, query: Query, values: Mapping | None = None) -> list[dict[str, Any]]:
        return await self._run(query, all_rows, values)

    async def fetch_one(self, query: Query, values: Mapping | None = None) -> dict[str, Any] | None:
        return await self._run(query, first_row, values)

    async def fetch_val(self, query: Query, values: Mapping | None = None) -> Any:
        return await self._run(query, sa.CursorResult.scalar, values)

    async def execute(
        self, query: Query, values: Mapping | Sequence[Mapping] | None = None
    ) -> None:
        """Run a statement for its effect (once per mapping, when `values` is a list)."""
        await self._run(query, _nothing, values)

    async def fetch_large(self, query: sa.Select) -> list[dict[str, Any]]:
        """Every row of a read that may be large (training data, an export), off the event
        loop: on SQLite whole, on a worker thread; on PostgreSQL from a server-side cursor
        in chunks of LARGE_READ_CHUNK_ROWS, each its own awaited call bounded by the
        timeout, the event loop serving other requests in between."""
        with _measured("large_read"):
            return await self._read_large(query)

    async def _read_large(self, query: sa.Select) -> list[dict[str, Any]]:
        if self._large_reader is not None:
            return await asyncio.to_thread(self._read_large_on_a_thread, query)
        rows: list[dict[str, Any]] = []
        # On PostgreSQL a server-side cursor lives in a transaction.
        async with self._connection(self.engine) as connection:
            await self._call(connection.begin())
            result = await self._call(
                connection.stream(query.execution_options(yield_per=LARGE_READ_CHUNK_ROWS))
            )
            names = list(result.keys())
            while chunk := await self._call(result.fetchmany(LARGE_READ_CHUNK_ROWS)):
                rows += _as_dicts(names, chunk)
        return rows

    # — how each call runs —

    async def _run(self, query: Query, take: Callable, values: Any = None) -> Any:
        statement = sa.text(query) if isinstance(query, str) else query
        if self.engine is None and self._writer is None:
            raise self._unavailable(ConnectionError("the database is not connected"))
        if self._writer is None:  # PostgreSQL: one statement, one round trip
            with _measured("statement"):
                return take(
                    await self._on_held(lambda connection: connection.execute(statement, values))
                )

        def run_statement(connection: sa.Connection) -> Any:
            return take(connection.execute(statement, values))

        with _measured("statement"):
            if isinstance(statement, sa.Select):
                return self._read_inline(run_statement)
            return await self._writer.run(run_statement)

    def _read_large_on_a_thread(self, query: sa.Select) -> list[dict[str, Any]]:
        try:
            with self._large_reader.connect() as connection:
                return all_rows(connection.execute(query))
        except Exception as error:
            if not is_unavailable(error):
                raise
            raise self._unavailable(error) from error

    def _read_inline(self, work: UnitOfWork) -> Any:
        try:
            with self._reader.connect() as connection:
                return work(connection)
        except Exception as error:
            if not is_unavailable(error):
                raise
            raise self._unavailable(error) from error

    async def _on_held(self, call: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        """`call` on one of PostgreSQL's held connections, all bounded by the timeout."""
        if self._held is None:
            raise self._unavailable(ConnectionError("the database is not connected"))

        async def on_a_held_connection() -> Any:
            async with self._held.connection(_leaves_connection_unknown) as connection:
                if self.statement_cache:
                    return await call(connection)
                async with connection.begin():
                    return await call(connection)

        return await self._call(on_a_held_connection())

    async def _open_held(self) -> AsyncConnection:
        try:
            return await self._held_engine.connect()
        except (sa.exc.DBAPIError, OSError) as error:  # whatever stops a connection opening
            raise self._unavailable(error) from error

    @contextlib.asynccontextmanager
    async def _connection(self, engine: AsyncEngine):
        """A pooled connection for the block, given back whatever happens. After a failure
        it is rolled back; if the database is unavailable, or the rollback fails, it is
        discarded instead, in the background, so the client's 503 does not wait for it."""
        if engine is None:
            raise self._unavailable(ConnectionError("the database is not connected"))
        waited_from = time.perf_counter()
        try:
            connection = await self._call(engine.connect())
        except (sa.exc.DBAPIError, OSError) as error:  # whatever stops a connection opening
            raise self._unavailable(error) from error
        DATABASE_CONNECTION_WAIT.observe(time.perf_counter() - waited_from)
        try:
            yield connection
        except BaseException as error:
            if _leaves_connection_unknown(error):
                self._discard(connection)
            else:
                with contextlib.suppress(Exception):
                    await self._give_back(connection)
            raise
        await self._give_back(connection)

    async def _give_back(self, connection: AsyncConnection) -> None:
        """Return a connection to the pool, rolling back what it began; if that fails,
        discard it."""
        try:
            await self._call(connection.close())
        except BaseException:
            self._discard(connection)
            raise

    async def _call(self, operation: Awaitable[Any]) -> Any:
        """Await one database operation within the timeout; DatabaseUnavailable if it does
        not answer in time or the database cannot serve."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await operation
        except Exception as error:
            if isinstance(error, DatabaseUnavailable) or not is_unavailable(error):
                raise
            raise self._unavailable(error) from error

    def _unavailable(self, error: BaseException) -> DatabaseUnavailable:
        """The 503's exception for `error`, which stays attached as its cause."""
        if self._held is not None:  # the server may have dropped them all, as it did this one
            self._held.forget_all()
        return unavailable_because(error, self.timeout_s)

    def _discard(self, connection: AsyncConnection) -> None:
        """Invalidate (close for good, never reuse) a connection whose state is unknown."""

        async def discard() -> None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()

        task = background_task(discard())
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)


def database_for(settings: Settings) -> Database:
    return Database(
        settings.database_url,
        settings.db_timeout_s,
        settings.db_pool_size,
        settings.db_statement_cache,
    )


async def with_database(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    database = database_for(settings)
    await database.connect()
    try:
        return await work(database)
    finally:
        await database.disconnect()
