"""Everyone's cycles, learned anew off the request path: the population that every woman's
forecast leans on (app.state.cycle_population.current)."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from planher.config import POPULATION_REFRESH_DUTY, POPULATION_REFRESH_S
from planher.cycles.lengths import cycle_lengths
from planher.cycles.population import BUILT_IN_POPULATION, CyclePopulation, learn_population
from planher.storage.database import Database
from planher.storage.failures import DatabaseUnavailable
from planher.storage.tables import period_records

logger = logging.getLogger(__name__)


class PopulationStore:
    """The population learned last, and when: learned again hourly, and sooner when new
    periods were logged (looked for every `check_s` seconds by the newest period's id; an
    edit or a deletion waits for the hour), but never spending more than
    1/POPULATION_REFRESH_DUTY of the time learning (a fit over thousands of women takes
    seconds)."""

    def __init__(self, database: Database, check_s: float) -> None:
        self.database, self.check_s = database, check_s
        self.current: CyclePopulation = BUILT_IN_POPULATION
        self.learned_at = -math.inf  # time.monotonic()
        self.learning_s = 0.0
        self.newest_period_id: int | None = None  # when it was learned

    async def learn(self) -> CyclePopulation:
        """Learn it now from every woman's cycles (less those set aside)."""
        began = time.monotonic()
        newest = await self.database.fetch_val(sa.select(sa.func.max(period_records.c.id)))
        rows = await self.database.fetch_large(
            sa.select(
                period_records.c.user_id, period_records.c.start_date, period_records.c.excluded
            )
        )

        def from_rows() -> CyclePopulation:
            starts, set_aside = collections.defaultdict(list), collections.defaultdict(set)
            for row in rows:
                starts[row["user_id"]].append(row["start_date"])
                if row["excluded"]:
                    set_aside[row["user_id"]].add(row["start_date"])
            return learn_population(
                cycle_lengths(starts[owner], set_aside[owner]) for owner in sorted(starts)
            )

        self.current = await run_in_threadpool(from_rows)
        self.learned_at, self.learning_s = time.monotonic(), time.monotonic() - began
        self.newest_period_id = newest
        logger.info(
            "cycle population learned from %d women in %.1f s: median typical length %.1f "
            "days, %.0f%% of cycles irregular",
            self.current.n_women,
            self.learning_s,
            self.current.typical_length,
            100 * self.current.irregular_share,
        )
        return self.current

    async def due(self) -> bool:
        since = time.monotonic() - self.learned_at
        if since < max(self.check_s, POPULATION_REFRESH_DUTY * self.learning_s):
            return False
        if since >= POPULATION_REFRESH_S:
            return True
        newest = await self.database.fetch_val(sa.select(sa.func.max(period_records.c.id)))
        return newest != self.newest_period_id

    async def keep_fresh(self) -> None:
        """From start-up on, in the background: start-up never waits for everyone."""
        while True:
            try:
                if await self.due():
                    await self.learn()
            except DatabaseUnavailable:
                pass  # looked for again at the next check
            except Exception:  # a bug must not stop the learning for the process's life
                logger.exception("learning everyone's cycles failed")
                self.learned_at = time.monotonic()  # and is not retried at once
            await asyncio.sleep(self.check_s)
