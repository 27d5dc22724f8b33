"""The one thread that writes to a SQLite database, committing units of work in groups."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from planher.config import GROUP_COMMIT_MAX_UNITS, WRITER_TURN_POLL_S
from planher.storage.failures import is_unavailable, unavailable_because

UnitOfWork = Callable[[sa.Connection], Any]


@dataclasses.dataclass(eq=False)
class _Unit:
    """A unit of work waiting for the writer, and how its answer gets back to the loop."""

    work: UnitOfWork
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float  # time.monotonic() after which it is not begun
    state: str = "waiting"  # → "begun" by the writer, or "abandoned" by its caller
    result: Any = None
    error: BaseException | None = None

    def claim(self, lock: threading.Lock) -> bool:
        """Whether the writer may begin it: its caller still waits, and not for too long."""
        with lock:
            if self.state == "waiting" and time.monotonic() <= self.deadline:
                self.state = "begun"
                return True
            self.state = "abandoned"
            return False

    def settle(self) -> None:
        """Hand the answer to the caller's event loop (which may have closed)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._settle_on_loop)

    def _settle_on_loop(self) -> None:
        if self.future.done():  # the caller gave up
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


class SQLiteWriter:
    """Every write of this process runs here, on one thread that owns the write connection
    (SQLite has one writer anyway): the event loop hands a unit of work over once and gets
    its answer once, instead of a hop per statement.

    Units that arrive while a commit is under way are committed together, each in a
    SAVEPOINT of its own so that one failing rolls back only itself; each caller hears back
    only after the commit is durable (`synchronous = FULL`). Writers of other processes take
    turns with this one on an exclusive flock of a file beside the database."""

    def __init__(self, engine: sa.Engine, database_path: str, timeout_s: float) -> None:
        self.engine, self.timeout_s = engine, timeout_s
        self.hops = 0  # units handed to the thread: one hop there and one back each
        self.commits = 0  # groups committed (or rolled back) together
        self._units: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._claims = threading.Lock()
        self._turn_file = open(f"{database_path}.writer-lock", "a+b")  # noqa: SIM115 (held open)
        self._connection: sa.Connection | None = None
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def run(self, work: UnitOfWork) -> Any:
        """`work(connection)` in a write transaction; its result once that is committed.
        DatabaseUnavailable if the database cannot take it within the timeout."""
        loop = asyncio.get_running_loop()
        unit = _Unit(work, loop, loop.create_future(), time.monotonic() + self.timeout_s)
        self.hops += 1
        self._units.put(unit)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await unit.future
        except BaseException as error:
            with self._claims:
                if unit.state == "waiting":
                    unit.state = "abandoned"
            if isinstance(error, TimeoutError):
                raise unavailable_because(error, self.timeout_s) from error
            raise

    def close(self) -> None:
        """Finish the units already handed over, then stop the thread."""
        self._units.put(None)
        self._thread.join()
        if self._connection is not None:
            self._connection.close()
        self._turn_file.close()

    # — on the writer thread —

    def _serve(self) -> None:
        while True:
            first = self._units.get()
            if first is None:
                return
            batch, stopping = [first], False
            while len(batch) < GROUP_COMMIT_MAX_UNITS:
                try:
                    unit = self._units.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    stopping = True
                    break
                batch.append(unit)
            claimed = [unit for unit in batch if unit.claim(self._claims)]
            if claimed:
                self._commit_together(claimed)
            for unit in claimed:
                unit.settle()
            if stopping:
                return

    def _commit_together(self, units: list[_Unit]) -> None:
        try:
            with self._turn():
                connection = self._connection or self._connect()
                self.commits += 1
                with connection.begin():  # BEGIN IMMEDIATE; COMMIT, or ROLLBACK if it raises
                    if len(units) == 1:  # the transaction is its savepoint
                        units[0].result = units[0].work(connection)
                    else:
                        for unit in units:
                            self._run_in_savepoint(connection, unit)
        except Exception as error:
            if len(units) == 1 and not is_unavailable(error):
                units[0].error = error  # its own failure: a 409, a 422, a bug
                if self._sqlite_in_transaction():
                    self._drop_connection()  # a failed COMMIT keeps the write lock
                return
            self._drop_connection()
            for unit in units:
                unit.result, unit.error = None, unavailable_because(error, self.timeout_s)

    def _run_in_savepoint(self, connection: sa.Connection, unit: _Unit) -> None:
        savepoint = connection.begin_nested()
        try:
            unit.result = unit.work(connection)
        except Exception as error:
            if is_unavailable(error):
                raise  # the database, not this unit: none of the group can commit
            savepoint.rollback()
            unit.error = error
            return
        savepoint.commit()

    def _sqlite_in_transaction(self) -> bool:
        """Whether SQLite itself (not just SQLAlchemy) still has a transaction open."""
        if self._connection is None:
            return False
        return self._connection.connection.driver_connection.in_transaction

    def _connect(self) -> sa.Connection:
        self._connection = self.engine.connect()
        return self._connection

    def _drop_connection(self) -> None:
        """After a failure outside any one unit the connection's state is unknown: it is
        closed for good and the next group opens a new one."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.invalidate()
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    @contextlib.contextmanager
    def _turn(self):
        """This process's turn to write, once any other process's writer is done."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(self._turn_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another process held the write turn") from None
                time.sleep(WRITER_TURN_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(self._turn_file, fcntl.LOCK_UN)
