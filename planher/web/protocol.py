"""uvicorn's HTTP protocol with a deadline on each request's headers."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from planher.config import REQUEST_READ_LINGER_S, REQUEST_READ_TIMEOUT_S
from planher.web.error_responses import REQUEST_READ_TIMEOUT_DETAIL, STANDARD_HEADERS

# The connection (a RequestReadDeadline, when uvicorn runs with it) whose bytes are being
# handed to the app: set while uvicorn parses them, so the request's task inherits it.
READING_CONNECTION: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "reading_connection", default=None
)


class RequestReadDeadline(asyncio.Protocol):
    """uvicorn's own HTTP protocol with a deadline on each request's headers, which uvicorn
    parses before the app sees anything: run it with `uvicorn planher:app --http
    planher:RequestReadDeadline` (the Procfile does). The deadline starts with the first
    byte of a request (or the connection) and ends when the app takes the request; when it
    passes, the client gets 408 and the connection is closed — silently if it never sent a
    byte, as nginx does. RequestReadTimeoutMiddleware then bounds the body."""

    # `planher.RequestReadDeadline` is a subclass bound to the app's own setting.
    timeout_s: float = REQUEST_READ_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.http = AutoHTTPProtocol(*args, **kwargs)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.bytes_since_armed = False
        self.in_app = False
        self.lingering = False

    def arm(self) -> None:
        if self.deadline is None:
            self.bytes_since_armed = False
            self.deadline = self.loop.call_later(self.timeout_s, self.expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def expire(self) -> None:
        self.deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.bytes_since_armed:
            body = json.dumps(
                {"detail": REQUEST_READ_TIMEOUT_DETAIL, "code": "request_timeout"}
            ).encode()
            head = [
                "HTTP/1.1 408 Request Timeout",
                "content-type: application/json",
                f"content-length: {len(body)}",
                "connection: close",
                *(f"{name.lower()}: {value}" for name, value in STANDARD_HEADERS.items()),
            ]
            self.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
            # Closing with bytes still unread would reset the connection, and the reset can
            # overtake the 408: say we are done writing, and drop what still comes a while.
            self.lingering = True
            self.transport.write_eof()
            self.loop.call_later(REQUEST_READ_LINGER_S, self.transport.close)
            return
        self.transport.close()

    def request_started(self) -> None:
        self.in_app = True
        self.disarm()

    def request_finished(self) -> None:
        self.in_app = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.arm()
        self.http.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if not self.in_app:
            self.arm()
            self.bytes_since_armed = True
        token = READING_CONNECTION.set(self)
        try:
            self.http.data_received(data)
        finally:
            READING_CONNECTION.reset(token)

    def eof_received(self) -> bool | None:
        if self.lingering:
            self.transport.close()
            return None
        return self.http.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()
