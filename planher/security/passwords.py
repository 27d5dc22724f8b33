"""Passwords: bcrypt in worker threads, so hashing never blocks the event loop."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread
import bcrypt

# bcrypt takes ~200 ms of CPU at cost 12. Run in worker threads, at most one per core: more
# would not hash faster, only crowd the event loop off the CPU.
BCRYPT_THREADS = anyio.CapacityLimiter(os.cpu_count() or 1)


async def hash_password(password: str, rounds: int) -> str:
    hashed = await anyio.to_thread.run_sync(
        bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds), limiter=BCRYPT_THREADS
    )
    return hashed.decode()


async def verify_password(password: str, password_hash: str) -> bool:
    return await anyio.to_thread.run_sync(
        bcrypt.checkpw, password.encode(), password_hash.encode(), limiter=BCRYPT_THREADS
    )
