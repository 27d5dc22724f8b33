"""PostgreSQL connections held open for reads: taking one is a queue pop, not a pool round."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from planher.metrics import DATABASE_CONNECTION_WAIT


class HeldConnections:
    """A few autocommit connections, opened on first use and then kept, that reads take
    turns on. Checking a connection out of SQLAlchemy's pool and back in costs more CPU than
    an indexed read itself (pool events, a reset on return, three greenlet switches); a read
    on a held connection pays none of it. A connection whose state is unknown after a
    failure is handed to `discard` and replaced by a new one when next needed; after a sign
    that the server went away (`forget_all`), so is every other, as SQLAlchemy's pool does."""

    def __init__(
        self,
        size: int,
        open_connection: Callable[[], Awaitable[AsyncConnection]],
        discard: Callable[[AsyncConnection], None],
    ) -> None:
        self._open_connection, self._discard = open_connection, discard
        # None: a slot whose connection is not open (yet, or any more).
        self._idle: asyncio.LifoQueue[AsyncConnection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._idle.put_nowait(None)
        self._open = self._lent = 0
        self._generation = 0  # connections opened before the last forget_all are not used
        self._opened_in: dict[AsyncConnection, int] = {}

    @property
    def open_and_idle(self) -> int:
        """Held connections open and waiting: checked out of the pool, in no one's use."""
        return self._open - self._lent

    @contextlib.asynccontextmanager
    async def connection(self, discard_after: Callable[[BaseException], bool]):
        """A held connection for the block; if the block raises an error for which
        `discard_after` says so, the connection is discarded rather than kept."""
        waited_from = time.perf_counter()
        held = await self._idle.get()
        DATABASE_CONNECTION_WAIT.observe(time.perf_counter() - waited_from)
        if held is not None and self._opened_in[held] < self._generation:
            self._forget(held)
            held = None
        try:
            if held is None:
                held = await self._open_connection()
                self._open += 1
                self._opened_in[held] = self._generation
            self._lent += 1
            try:
                yield held
            finally:
                self._lent -= 1
        except BaseException as error:
            if held is not None and discard_after(error):
                self._forget(held)
                held = None
            raise
        finally:
            self._idle.put_nowait(held)

    def forget_all(self) -> None:
        """The server may have dropped every connection: open new ones from now on."""
        self._generation += 1

    def _forget(self, held: AsyncConnection) -> None:
        self._discard(held)
        del self._opened_in[held]
        self._open -= 1

    async def close(self) -> None:
        """Close the connections not in use now (at shutdown)."""
        while not self._idle.empty():
            held = self._idle.get_nowait()
            if held is not None:
                self._open -= 1
                del self._opened_in[held]
                with contextlib.suppress(Exception):
                    await held.close()
