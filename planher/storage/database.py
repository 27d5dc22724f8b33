"""SQLAlchemy's engines behind one small facade: SQLite (one writer) or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import logging
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
    WRITER_TURN_POLL_S,
    Settings,
)
from planher.storage.failures import DatabaseUnavailable, driver_url, is_unavailable, masked_url
from planher.storage.tables import schema_migrations

# aiosqlite logs each call with its arguments at DEBUG, and those are her data: keep it quiet.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

# How both drivers' "that row already exists" reaches us.
UNIQUE_VIOLATIONS = sa.exc.IntegrityError


class WriterTurn:
    """One SQLite writer at a time, queued without SQLite's busy handler, which polls with
    sleeps of up to 100 ms so that under load writers starve. Writers of a process queue on
    an asyncio lock; processes take turns on an exclusive flock of a file beside the
    database, checked every WRITER_TURN_POLL_S. Waiting is cancellable, so a writer that
    waits longer than the database timeout gives up cleanly."""

    def __init__(self, database_path: str) -> None:
        self._lock = asyncio.Lock()
        self._file = open(f"{database_path}.writer-lock", "a+b")  # noqa: SIM115 (held open)

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            while True:
                try:
                    fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:  # another process is writing
                    await asyncio.sleep(WRITER_TURN_POLL_S)
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._lock.release()

    def close(self) -> None:
        self._file.close()


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


def _begin_immediately(connection: sa.Connection) -> None:
    """A `begin` event listener: SQLite transactions take the write lock when they begin,
    so two read-then-write transactions queue instead of deadlocking at their first write."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


Query = sa.Executable | str  # a Core statement, or plain SQL without parameters


def _as_dicts(names: Sequence[str], rows: Iterable[Sequence]) -> list[dict[str, Any]]:
    """Rows as plain dicts: cheaper to build and to read than SQLAlchemy's Row objects."""
    return [dict(zip(names, row, strict=True)) for row in rows]


def _all_rows(result: sa.CursorResult) -> list[dict[str, Any]]:
    return _as_dicts(list(result.keys()), result.all())


def _first_row(result: sa.CursorResult) -> dict[str, Any] | None:
    row = result.mappings().first()
    return None if row is None else dict(row)


def _nothing(result: sa.CursorResult) -> None:
    return None


def background_task(coroutine: Awaitable[Any]) -> asyncio.Task:
    """Run `coroutine` as a task of its own, outside the caller's context: in particular
    outside any transaction the caller has open. Keep a reference to it."""
    return asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())


class Database:
    """The database as handlers use it: `fetch_all`, `fetch_one`, `fetch_val`, `execute`,
    and `transaction()`, whose block runs every call of the same task on one connection.

    Underneath are SQLAlchemy's own async engines (aiosqlite, asyncpg). Each call is
    bounded by the timeout; a failed call gives its connection back, a call that timed out
    or lost its server discards it, and either way the client gets DatabaseUnavailable
    (503). On SQLite, writes take turns (WriterTurn, BEGIN IMMEDIATE) and Core SELECTs
    outside a transaction run inline on the event loop, on a read-only connection of a
    synchronous engine: in WAL mode a read never waits for a writer, and an indexed read
    takes less time than the hop to a driver thread and back. Reads of many rows use
    `fetch_large`, which streams them in chunks and hands the event loop back in between.
    """

    def __init__(
        self, url: str, timeout_s: float = DB_TIMEOUT_S, pool_size: int = DB_POOL_SIZE
    ) -> None:
        self.url, self.display_url = url, masked_url(url)
        self.timeout_s, self.pool_size = timeout_s, pool_size
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.engine: AsyncEngine | None = None
        self._autocommit: AsyncEngine | None = None  # statements on their own, large reads
        self._engines: list[AsyncEngine] = []  # each with a pool of its own
        self._reader: sa.Engine | None = None
        self._writer_turn: WriterTurn | None = None
        self._transaction_connection: contextvars.ContextVar[AsyncConnection | None] = (
            contextvars.ContextVar(f"transaction of {self.display_url}", default=None)
        )
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
        if self.dialect == "postgresql":
            self.engine = create_async_engine(
                url, connect_args={"timeout": self.timeout_s}, **options
            )
            # Single statements need no transaction: one round trip each, not three.
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._engines = [self.engine]
        else:
            # SQLite itself gives up on a lock a little before our timeout: a clean error
            # rather than an abandoned connection.
            on_connect = _configure_sqlite(int(self.timeout_s * 900))
            self.engine = create_async_engine(url, **options)
            sa.event.listen(self.engine.sync_engine, "connect", on_connect)
            sa.event.listen(self.engine.sync_engine, "begin", _begin_immediately)
            # Statements on their own and large reads have connections of their own, in
            # autocommit mode: a write alone is atomic without BEGIN and COMMIT (two driver
            # round trips fewer), and a read never takes the write lock.
            self._autocommit = create_async_engine(url, isolation_level="AUTOCOMMIT", **options)
            sa.event.listen(self._autocommit.sync_engine, "connect", on_connect)
            self._engines = [self.engine, self._autocommit]
            self._reader = sa.create_engine(
                url.set(drivername="sqlite"),
                poolclass=sa.pool.StaticPool,  # one connection, only ever used on the loop
                connect_args={"check_same_thread": False},
                hide_parameters=True,
            )
            sa.event.listen(
                self._reader,
                "connect",
                _configure_sqlite(SQLITE_READER_BUSY_TIMEOUT_MS, "PRAGMA query_only = ON"),
            )
        try:
            async with self._connection(self.engine):  # fails here, not on the first request
                pass
            if self.dialect == "sqlite":
                self._writer_turn = WriterTurn(url.database)
                self._read_inline(sa.select(1), sa.CursorResult.scalar)
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        if self._discarding:
            await asyncio.wait(set(self._discarding), timeout=self.timeout_s)
        for engine in self._engines:
            await engine.dispose()
        if self._reader is not None:
            self._reader.dispose()
        if self._writer_turn is not None:
            self._writer_turn.close()
        self.engine = self._autocommit = None
        self._engines = []
        self._reader = self._writer_turn = None

    async def check_writable(self) -> None:
        """DatabaseUnavailable unless a write could begin now. The probe is a write that
        changes nothing: a read-only database refuses it, and on SQLite it waits for the
        write lock, which another program may hold longer than the timeout."""
        async with self.transaction():
            await self.execute(schema_migrations.delete().where(sa.false()))

    @property
    def connections_in_use(self) -> int:
        """Pooled connections checked out now: 0 whenever no call is running."""
        return sum(engine.pool.checkedout() for engine in self._engines)

    # — the calls handlers make —

    # `values` fill a statement's bind parameters: a hot statement is built once, with
    # sa.bindparam, rather than composed anew on every call.

    async def fetch_all(self, query: Query, values: Mapping | None = None) -> list[dict[str, Any]]:
        return await self._run(query, _all_rows, values)

    async def fetch_one(self, query: Query, values: Mapping | None = None) -> dict[str, Any] | None:
        return await self._run(query, _first_row, values)

    async def fetch_val(self, query: Query, values: Mapping | None = None) -> Any:
        return await self._run(query, sa.CursorResult.scalar, values)

    async def execute(
        self, query: Query, values: Mapping | Sequence[Mapping] | None = None
    ) -> None:
        """Run a statement for its effect (once per mapping, when `values` is a list)."""
        await self._run(query, _nothing, values)

    async def fetch_large(self, query: sa.Select) -> list[dict[str, Any]]:
        """Every row of a read that may be large (training data, an export), fetched in
        chunks of LARGE_READ_CHUNK_ROWS, each its own awaited call: the event loop serves
        other requests in between, and each chunk is bounded by the timeout."""
        rows: list[dict[str, Any]] = []
        async with self._connection_for_reads() as connection:
            result = await self._call(
                connection.stream(query.execution_options(yield_per=LARGE_READ_CHUNK_ROWS))
            )
            names = list(result.keys())
            while chunk := await self._call(result.fetchmany(LARGE_READ_CHUNK_ROWS)):
                rows += _as_dicts(names, chunk)
        return rows

    @contextlib.asynccontextmanager
    async def transaction(self):
        """The block's calls (in this task) on one connection, committed together at its
        end or, if it raises, not at all. A transaction inside another joins it."""
        if self._transaction_connection.get() is not None:
            yield
            return
        async with self._connection_in_turn(self.engine) as connection:
            token = self._transaction_connection.set(connection)
            try:
                await self._call(connection.begin())
                yield
            finally:
                self._transaction_connection.reset(token)
            try:
                await self._call(connection.commit())
            except Exception as error:
                # A COMMIT that failed (a deferred constraint) may leave SQLite's transaction
                # open, holding the write lock: this connection is never reused.
                if not isinstance(error, DatabaseUnavailable):
                    await self._call(connection.invalidate())
                raise

    # — how each call runs —

    async def _run(self, query: Query, take: Callable, values: Any = None) -> Any:
        statement = sa.text(query) if isinstance(query, str) else query
        if self.engine is None:
            raise self._unavailable(ConnectionError("the database is not connected"))
        connection = self._transaction_connection.get()
        if connection is not None:
            return take(await self._call(connection.execute(statement, values)))
        if self.dialect == "sqlite" and isinstance(statement, sa.Select):
            return self._read_inline(statement, take, values)
        async with self._connection_in_turn(self._autocommit) as connection:
            return take(await self._call(connection.execute(statement, values)))

    def _read_inline(self, statement: sa.Select, take: Callable, values: Any = None) -> Any:
        try:
            with self._reader.connect() as connection:
                return take(connection.execute(statement, values))
        except Exception as error:
            if not is_unavailable(error):
                raise
            raise self._unavailable(error) from error

    @contextlib.asynccontextmanager
    async def _connection_in_turn(self, engine: AsyncEngine):
        """A connection of `engine`, on SQLite (where only writes come here) once it is
        this writer's turn."""
        async with contextlib.AsyncExitStack() as stack:
            if self._writer_turn is not None:
                await self._call(stack.enter_async_context(self._writer_turn))
            yield await stack.enter_async_context(self._connection(engine))

    @contextlib.asynccontextmanager
    async def _connection_for_reads(self):
        connection = self._transaction_connection.get()
        if connection is not None:
            yield connection
            return
        # On PostgreSQL a server-side cursor lives in a transaction; on SQLite the
        # autocommit connections read without taking the write lock.
        engine = self.engine if self.dialect == "postgresql" else self._autocommit
        async with self._connection(engine) as connection:
            if self.dialect == "postgresql":
                await self._call(connection.begin())
            yield connection

    @contextlib.asynccontextmanager
    async def _connection(self, engine: AsyncEngine):
        """A pooled connection for the block, given back whatever happens. After a failure
        it is rolled back; if the database is unavailable, or the rollback fails, it is
        discarded instead, in the background, so the client's 503 does not wait for it."""
        if engine is None:
            raise self._unavailable(ConnectionError("the database is not connected"))
        try:
            connection = await self._call(engine.connect())
        except (sa.exc.DBAPIError, OSError) as error:  # whatever stops a connection opening
            raise self._unavailable(error) from error
        try:
            yield connection
        except BaseException as error:
            if is_unavailable(error) or isinstance(
                error, DatabaseUnavailable | asyncio.CancelledError
            ):
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
        if isinstance(error, TimeoutError):
            unavailable = DatabaseUnavailable(
                f"The database did not answer within {self.timeout_s:g} s"
            )
        else:
            unavailable = DatabaseUnavailable("The database is unavailable")
        unavailable.__cause__ = error
        return unavailable

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
    return Database(settings.database_url, settings.db_timeout_s, settings.db_pool_size)


async def with_database(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    database = database_for(settings)
    await database.connect()
    try:
        return await work(database)
    finally:
        await database.disconnect()
