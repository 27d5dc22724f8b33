"""The rules a period or a profile must keep, beyond what a single field can say."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from planher.config import PERIOD_MAX_DAYS


def period_problems(start: dt.date, end: dt.date | None, today: dt.date) -> list[tuple[str, str]]:
    """Rule breaks of one period on its own, as (field, message)."""
    latest_allowed = today
    problems = []
    if start > latest_allowed:
        problems.append(
            ("start_date", f"start_date may not be in the future (after {latest_allowed})")
        )
    if end is not None:
        if end > latest_allowed:
            problems.append(
                ("end_date", f"end_date may not be in the future (after {latest_allowed})")
            )
        if end < start:
            problems.append(("end_date", "end_date must be on or after start_date"))
        elif (end - start).days + 1 > PERIOD_MAX_DAYS:
            problems.append(("end_date", f"A period lasts at most {PERIOD_MAX_DAYS} days"))
    return problems


def profile_problems(profile: Mapping[str, Any]) -> list[tuple[str, str]]:
    luteal, menses, cycle = (
        profile["luteal_length"],
        profile["menses_length"],
        profile["cycle_length"],
    )
    if luteal + menses < cycle:
        return []
    return [
        (
            "cycle_length",
            f"luteal_length + menses_length must be less than cycle_length "
            f"({luteal} + {menses} is not less than {cycle})",
        )
    ]
