"""The retention sweep: history past each woman's retention_days deleted once a day, by
one process of all the instances."""

from __future__ import annotations

import asyncio
import logging

from planher.config import RETENTION_CHECK_S, RETENTION_SWEEP_INTERVAL_S
from planher.storage.chore_runs import claim_chore, release_chore
from planher.storage.database import Database
from planher.storage.failures import DatabaseUnavailable
from planher.storage.queries import delete_expired_history

logger = logging.getLogger(__name__)

RETENTION_CHORE = "retention_sweep"


async def sweep_if_due(database: Database) -> None:
    """Sweep if no process has in the last RETENTION_SWEEP_INTERVAL_S. A sweep the database
    failed is given back, so the next check (of any process) runs it."""
    try:
        if not await claim_chore(database, RETENTION_CHORE, RETENTION_SWEEP_INTERVAL_S):
            return
    except DatabaseUnavailable:
        return
    try:
        deleted = await delete_expired_history(database)
    except DatabaseUnavailable:
        try:
            await release_chore(database, RETENTION_CHORE)
        except DatabaseUnavailable:
            logger.warning("retention: the sweep failed and stays claimed until tomorrow")
        return
    logger.info("retention: swept, %d rows past their owners' retention_days deleted", deleted)


async def sweep_daily(database: Database) -> None:
    """Ask every RETENTION_CHECK_S whether the day's sweep is due, from start-up on."""
    while True:
        await sweep_if_due(database)
        await asyncio.sleep(RETENTION_CHECK_S)
