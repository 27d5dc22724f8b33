"""Health probes (liveness, readiness) and the metrics an operator scrapes."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from planher.config import RETRY_AFTER_S, __version__
from planher.errors import APIError
from planher.metrics import UNAVAILABLE, metrics_text
from planher.schemas.responses import LivenessOut, ReadinessOut
from planher.web.endpoint import endpoint
from planher.web.request_metrics import ROUTE_SCOPE_KEY


@endpoint("Liveness: the process answers (no database call)", ok=(200, LivenessOut), auth=None)
async def health(request: Request) -> Any:
    return {"status": "ok", "version": __version__}


@endpoint(
    "Readiness: the database answers and a write could begin",
    ok=(200, ReadinessOut),
    auth=None,
    errors={503: "The database is unavailable or too slow, or this instance is stopping"},
)
async def health_ready(request: Request) -> Any:
    if request.app.state.shutdown.draining:
        UNAVAILABLE.labels(cause="shutting_down").inc()
        raise APIError(
            503,
            "shutting_down",
            "This instance is shutting down",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    await request.app.state.database.check_writable()
    return {"status": "ok", "database": "ok", "version": __version__}


async def metrics(request: Request) -> Response:
    """Prometheus' text format, for `Authorization: Bearer <METRICS_TOKEN>` only; without
    METRICS_TOKEN the route is not there (404). Not in the API document: it is the
    operator's, not the app's."""
    request.scope[ROUTE_SCOPE_KEY] = "/metrics"  # a plain route: not counted as unmatched
    token = request.app.state.settings.metrics_token
    if not token:
        raise APIError(404, "not_found", "Not found")
    sent = request.headers.get("authorization", "")
    if not secrets.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise APIError(
            401,
            "invalid_token",
            "The metrics need the METRICS_TOKEN as a Bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body, media_type = await run_in_threadpool(metrics_text)  # reads every process's file
    return Response(body, media_type=media_type)
