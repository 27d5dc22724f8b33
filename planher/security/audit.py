"""The audit trail: security events, never a password, a token or a health value."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from planher.clock import utc_now
from planher.storage.tables import audit_events


def audit_event(
    request: Request,
    action: str,
    *,
    ok: bool,
    user_id: int | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """A security event as its row: who, what, from where, and whether it succeeded. Never
    a password, a token or a health value. A unit of work writes it beside what it records."""
    if user_id is None and request.user.is_authenticated:
        user_id = request.user.id
    return {
        "at": utc_now(),
        "user_id": user_id,
        "action": action,
        "target": target,
        "ip": request.client.host if request.client else None,
        "ok": ok,
    }


async def audit(
    request: Request,
    action: str,
    *,
    ok: bool,
    user_id: int | None = None,
    target: str | None = None,
) -> None:
    """Record a security event on its own."""
    event = audit_event(request, action, ok=ok, user_id=user_id, target=target)
    await request.app.state.database.execute(audit_events.insert().values(event))
