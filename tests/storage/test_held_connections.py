"""Held connections: reused while healthy, replaced after a failure or a lost server."""

import asyncio

import pytest

from planher.storage.held_connections import HeldConnections


class Opened:
    """Stands in for the connections the pool would open: numbered, and remembered."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.discarded: list[int] = []

    async def open(self) -> int:
        self.opened.append(len(self.opened) + 1)
        return self.opened[-1]


def held_connections(size: int = 2) -> tuple[HeldConnections, Opened]:
    opened = Opened()
    return HeldConnections(size, opened.open, opened.discarded.append), opened


def keep_after(error: BaseException) -> bool:
    return isinstance(error, ConnectionError)


async def use(held: HeldConnections, fail_with: BaseException | None = None) -> int:
    async with held.connection(keep_after) as connection:
        await asyncio.sleep(0)  # as a read would: others come in meanwhile
        if fail_with is not None:
            raise fail_with
        return connection


def test_a_held_connection_is_opened_once_and_reused():
    async def scenario():
        held, opened = held_connections()
        used = [await use(held) for _ in range(5)]
        return used, opened.opened, held.open_and_idle

    used, opened, idle = asyncio.run(scenario())
    assert used == [1] * 5 and opened == [1] and idle == 1


def test_a_connection_left_unknown_by_a_failure_is_discarded_and_replaced():
    async def scenario():
        held, opened = held_connections(size=1)
        with pytest.raises(ValueError):  # a statement's own error: the connection is fine
            await use(held, ValueError("no such table"))
        with pytest.raises(ConnectionError):
            await use(held, ConnectionError("server closed the connection"))
        return await use(held), opened.discarded, held.open_and_idle

    after, discarded, idle = asyncio.run(scenario())
    assert after == 2 and discarded == [1] and idle == 1


def test_after_forget_all_every_idle_connection_is_replaced_when_next_taken():
    async def scenario():
        held, opened = held_connections(size=2)
        first = await asyncio.gather(use(held), use(held))
        held.forget_all()
        second = await asyncio.gather(use(held), use(held))
        return sorted(first), sorted(second), sorted(opened.discarded)

    first, second, discarded = asyncio.run(scenario())
    assert first == [1, 2] and second == [3, 4] and discarded == [1, 2]


def test_concurrent_readers_wait_their_turn_for_a_held_connection():
    async def scenario():
        held, opened = held_connections(size=2)
        in_use, most = 0, 0

        async def read() -> None:
            nonlocal in_use, most
            async with held.connection(keep_after):
                in_use += 1
                most = max(most, in_use)
                await asyncio.sleep(0.001)
                in_use -= 1

        await asyncio.gather(*(read() for _ in range(20)))
        return most, len(opened.opened)

    assert asyncio.run(scenario()) == (2, 2)
