"""Health probes: liveness and readiness."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from planher.config import __version__
from planher.schemas.responses import LivenessOut, ReadinessOut
from planher.web.endpoint import endpoint


@endpoint("Liveness: the process answers (no database call)", ok=(200, LivenessOut), auth=None)
async def health(request: Request) -> Any:
    return {"status": "ok", "version": __version__}


@endpoint(
    "Readiness: the database answers and a write could begin",
    ok=(200, ReadinessOut),
    auth=None,
    errors={503: "The database is unavailable or too slow"},
)
async def health_ready(request: Request) -> Any:
    await request.app.state.database.check_writable()
    return {"status": "ok", "database": "ok", "version": __version__}
