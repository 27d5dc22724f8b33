"""PlanHer: the backend of a cycle-tracking app.

`uvicorn planher:app --http planher:RequestReadDeadline` serves it; `python -m planher --help`
lists the commands. The app is created on first access (PEP 562), so importing any module of
the package starts nothing and reads no environment.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from planher.application import create_app

        globals()["app"] = create_app()
        return globals()["app"]
    if name == "RequestReadDeadline":
        from planher.web.protocol import RequestReadDeadline

        # uvicorn builds one protocol per connection: each reads the served app's deadline.
        bound = type(
            "RequestReadDeadline",
            (RequestReadDeadline,),
            {"timeout_s": __getattr__("app").state.settings.request_read_timeout_s},
        )
        globals()["RequestReadDeadline"] = bound
        return bound
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
