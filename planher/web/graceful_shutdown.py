"""Restarts no one notices: on SIGTERM, fail readiness at once, keep serving for a drain
delay, and only then let uvicorn stop.

uvicorn closes its listener as soon as it handles SIGTERM, and has no drain setting of its
own, so a load balancer that has not yet seen the instance go unready would send it
requests it then refuses. `GracefulShutdown.take_signal_first` puts the app's handler in
front of uvicorn's, in every worker process: readiness answers 503 from that moment, every
answer asks its client to close the connection (so pooled keep-alive connections move on),
and after `drain_s` uvicorn's own handler runs: it stops accepting, finishes what is in
flight within its graceful-shutdown timeout, and the lifespan's shutdown stops training.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class GracefulShutdown:
    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.draining = False

    def take_signal_first(self) -> None:
        """Handle SIGTERM before the server's handler (installed already, at this point of
        the lifespan), which then runs after the drain. Only the main thread can set a
        signal handler: elsewhere (an app run in tests' threads) nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        servers_handler = signal.getsignal(signal.SIGTERM)
        if not callable(servers_handler):
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            # A platform signals every process of the instance, and uvicorn's supervisor then
            # signals its workers again: a second SIGTERM is the same request (Ctrl-C, SIGINT,
            # is the way to stop at once).
            if self.draining:
                return
            self.draining = True
            logger.info("SIGTERM: unready now, draining for %.1f s before stopping", self.drain_s)
            loop.call_soon_threadsafe(
                loop.call_later, self.drain_s, self._hand_on, servers_handler, signum
            )

        signal.signal(signal.SIGTERM, on_sigterm)

    def exit_cleanly_if_signalled(self) -> None:
        """At the very end of the lifespan: once uvicorn is done it raises the SIGTERM it
        handled again, to die by it (status 143, which a supervisor may count as a crash).
        An instance that drained and shut down cleanly exits 0 instead."""
        if self.draining:
            logger.info("drained and stopped cleanly")
            logging.shutdown()
            os._exit(0)

    def _hand_on(self, servers_handler: Callable[[int, Any], Any], signum: int) -> None:
        servers_handler(signum, None)


class CloseWhileDrainingMiddleware:
    """While draining, every answer says `Connection: close`: a client's next request
    opens a new connection, which its load balancer sends to an instance that stays."""

    def __init__(self, app: ASGIApp, shutdown: GracefulShutdown) -> None:
        self.app, self.shutdown = app, shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.shutdown.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        await self.app(scope, receive, send_closing)
