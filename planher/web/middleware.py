"""ASGI middleware: client address, standard headers, 503 when the database is down, body limits."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sys
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from planher.config import (
    IMPORT_MAX_BYTES,
    IMPORT_PATH,
    IMPORT_READ_TIMEOUT_S,
    MAX_BODY_BYTES,
    RETRY_AFTER_S,
)
from planher.metrics import UNAVAILABLE
from planher.storage.failures import DatabaseUnavailable, unavailable_cause
from planher.web.error_responses import STANDARD_HEADERS, error_response
from planher.web.protocol import READING_CONNECTION
from planher.web.request_errors import BodyTooLarge, RequestReadTimeout

logger = logging.getLogger(__name__)


class ClientGoneMiddleware:
    """A client that goes away mid-request is normal (mobile networks, a closed app): one
    INFO line naming the route, never a traceback, and nothing more is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            # The route's template, not the path: a feed URL's path is its secret.
            route = getattr(scope.get("route"), "path", "an unknown route")
            logger.info("client went away during %s %s", scope["method"], route)


class ClientAddressMiddleware:
    """The client's address, as no client can forge it: the connection's peer, unless that
    peer is a proxy listed in FORWARDED_ALLOW_IPS (`*`: whatever its address, as Heroku's
    router); then the rightmost X-Forwarded-For entry that is not a listed proxy, which is
    the address the nearest trusted proxy saw. Entries left of it are the client's own."""

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.any_peer = "*" in trusted
        self.proxies = frozenset(trusted) - {"*"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and peer and (self.any_peer or peer[0] in self.proxies):
            forwarded = [
                entry.strip()
                for header in Headers(scope=scope).getlist("x-forwarded-for")
                for entry in header.split(",")
            ]
            for entry in reversed(forwarded):
                if entry not in self.proxies:
                    with contextlib.suppress(ValueError):  # not an address: keep the peer
                        scope = {**scope, "client": (str(ipaddress.ip_address(entry)), 0)}
                    break
        await self.app(scope, receive, send)


class StandardHeadersMiddleware:
    """Adds STANDARD_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(STANDARD_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DatabaseUnavailableMiddleware:
    """503 with Retry-After for a request that needed the database while it could not
    serve, wherever that was found (in a handler or in the authentication backend)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        response_started = False

        async def send_watching(message: Message) -> None:
            nonlocal response_started
            response_started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_watching)
        except DatabaseUnavailable as error:
            if response_started:
                raise
            scope["app"].state.failure_log.record(error)
            UNAVAILABLE.labels(cause=unavailable_cause(error)).inc()
            response = error_response(
                503, "database_unavailable", str(error), {"Retry-After": str(RETRY_AFTER_S)}
            )
            await response(scope, receive, send)


class StartupFailed(Exception):
    """The service cannot start; lifespan has logged the one line that says why."""


class QuietStartupFailureMiddleware:
    """Uvicorn prints the traceback that Starlette hands it with a failed start-up. For a
    StartupFailed the line lifespan logged says it all, so the traceback is left out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def send_quietly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and isinstance(
                sys.exc_info()[1], StartupFailed
            ):
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, send_quietly)


class RequestReadTimeoutMiddleware:
    """RequestReadTimeout when the body has not fully arrived `timeout_s` after the headers.
    It also tells the connection's RequestReadDeadline when the app holds the request, so
    the header deadline does not run while the app works."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        connection = READING_CONNECTION.get()
        if connection is not None:
            connection.request_started()
        timeout_s = IMPORT_READ_TIMEOUT_S if scope["path"] == IMPORT_PATH else self.timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        body_complete = False

        async def receive_before_deadline() -> Message:
            nonlocal body_complete
            if body_complete:  # what follows is only the client's disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestReadTimeout() from None
            body_complete = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, receive_before_deadline, send)
        finally:
            if connection is not None:
                connection.request_finished()


class BodySizeLimitMiddleware:
    """413 for bodies over MAX_BODY_BYTES (an import's: IMPORT_MAX_BYTES): at once when
    Content-Length says so, else as soon as the streamed body passes the limit, without
    ever holding more of it."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        import_max_bytes: int = IMPORT_MAX_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes, self.import_max_bytes = max_bytes, import_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = self.import_max_bytes if scope["path"] == IMPORT_PATH else self.max_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            response = error_response(
                413, "body_too_large", f"Request body is larger than {max_bytes} bytes"
            )
            return await response(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(max_bytes)
            return message

        await self.app(scope, limited_receive, send)
