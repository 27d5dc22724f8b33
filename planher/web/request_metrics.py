"""Every answer in the metrics: by route template (never the path, which carries ids and
feed tokens), method and status, with its latency."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from planher.metrics import REQUEST_DURATION, REQUESTS

ROUTE_SCOPE_KEY = "planher.route"  # set by the route that matched: its path template
UNMATCHED_ROUTE = "unmatched"  # 404s, and preflights answered before routing


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_watching)
        finally:
            route, method = scope.get(ROUTE_SCOPE_KEY, UNMATCHED_ROUTE), scope["method"]
            REQUESTS.labels(route=route, method=method, status=str(status)).inc()
            REQUEST_DURATION.labels(route=route, method=method).observe(
                time.perf_counter() - started
            )
